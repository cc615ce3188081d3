#!/usr/bin/env python
"""Convert the UCI HIGGS file to HDF5 (same as the `amtrain-higgs-convert` command).

    python scripts/convert_higgs.py HIGGS.csv.gz -o $AMTRAIN_DATA/HIGGS/HIGGS.h5
"""
import sys

from amtrain.data.higgs_convert import main

sys.exit(main())
