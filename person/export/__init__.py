"""Export, above training: a checkpoint -> one directory a device integrator needs and nothing else.

`graphs` wraps the students for export (BatchNorm folded, the character lookup left outside the text graph,
the L2 normalisation written with plain ops), `onnx_files` runs torch.onnx.export and the simplifier and
counts the ops, `targets` holds the op lists each target is checked against (with where each restriction
comes from), `variants` makes the fp16 and int8 files, `parity` compares ONNX with PyTorch on real inputs,
`card` writes model.json, and `exporter` puts it together atomically. `person.runtime` reads the result
without torch.
"""
