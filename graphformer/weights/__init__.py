"""Weights without torch: weight maps (a reference's names onto the spec's), checkpoint directories, fitting params to tensors."""
