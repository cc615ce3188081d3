"""The ICML 2019 methods: online AM (Algorithm 2.1) with Adam or co-activation memories,
its RNN version, and offline AM; with their pieces (code solver, memories, mu schedules)."""
