"""Stage 4, evaluation: embeddings -> ROC / EER / FRR@FAR and Rank-k / mAP / mINP, exact at any size.

`metrics/` scores any L2-normalised image and caption embeddings (pure functions of the arrays), `evaluate`
embeds a split with the students and scores them alone and mixed with the teacher's cached embeddings,
`report` prints the tables users know and writes the JSON and the ROC plot.
"""
