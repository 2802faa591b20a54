"""Paired perplexity ratios (run / its reference) with 95% bootstrap intervals; see summarize.py."""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from summarize import pairs

R = "rtn_g64_sym"
pairs([(n, R) for n in ["gptq_g64_sym", "gptq_g64_sym_drop0", "gptq_g64_sym_dropmassive20", "gptq_g64_sym_clip20",
                        "gptq_g64_sym_ignore_down_11_28_29", "hyb_gptq_rtn_down_11_28_29", "hyb_gptq_rtn_down_28",
                        "hyb_rtn_gptq_down_28", "gptq_g64_sym_actnone", "gptq_g64_sym_actweight", "gptq_g64_sym_actgroup",
                        "gptq_g64_sym_damp0.05", "gptq_g64_sym_damp0.1", "gptq_g64_sym_damp0.1_drop0", "gptq_g64_sym_opticks",
                        "gptq_g64_sym_16x512", "gptq_g64_sym_64x128", "gptq_g64_sym_128x256"]]
      + [("gptq_g32_asym", "rtn_g32_asym"), ("gptq_g64_asym", "rtn_g64_asym"),
         ("gptq_g64_sym_off05", "rtn_g64_sym_off05"), ("gptq_g64_sym_off05_drop0", "rtn_g64_sym_off05"),
         ("gptq_g32_asym_off05", "rtn_g32_asym_off05"),
         ("gptq_g64_sym_equiv", "rtn_g64_sym_equiv"), ("gptq_g64_sym_equiv_drop0", "rtn_g64_sym_equiv"),
         ("gptq_g32_asym_equiv", "rtn_g32_asym_equiv")]
      + [("gptq_g64_asym_ignore_down_11_28_29", "rtn_g64_asym"), ("gptq_g64_asym_ignore_opticks", "rtn_g64_asym"),
         ("gptq_g64_asym_opticks", "rtn_g64_asym"), ("rtn_g64_asym_ignore_down_11_28_29", "rtn_g64_asym"),
         ("gptq_g64_asym_ignore_down_11_28_29", "rtn_g64_asym_ignore_down_11_28_29"),
         ("gptq_g64_asym_ignore_opticks", "rtn_g64_asym_ignore_down_11_28_29"),
         ("gptq_g64_sym_ignore_down_11_28_29", "rtn_g64_sym_ignore_down_11_28_29"),
         ("rtn_g64_sym_ignore_down_11_28_29", "rtn_g64_sym")]
      + [(n, "rtn_g64_asym") for n in sys.argv[1:]])
