"""Stage 3, models: the students, created by dotted name (`backbone.mf3.ANet2`, `tbackbone.char.L3`).

Gives image students (`backbone/`, CNNs with NPU-friendly ops only), text students (`tbackbone/`, char-level
transformers over UTF-8 bytes), the pair as one module with the spec that rebuilds it (`students`), the
checkpoint file format (`checkpoint`) and MAC counting (`flops`). Evaluation and export rebuild a trained
pair from a checkpoint's `StudentSpec` alone, without the training options.
"""
