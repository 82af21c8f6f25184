"""Analyses of the checked IR: parameter and FLOP counts, the memory plan, the tensor-parallel plan, the decoder plan. No torch."""
