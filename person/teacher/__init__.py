"""Stage 2, teacher: a big vision-language model -> its embeddings of every image and caption, cached once.

Takes records (person.data) and a teacher directory or hub id; gives the feature store the students train
against. `hf/` loads SigLIP / SigLIP2 / MEXMA-SigLIP2 / CLIP offline through transformers, `extract` runs it
over a dataset (resumable, torchrun), `store/` is the HDF5 / zarr cache and its checks, `demo_model` the
shipped demo teacher's architecture. Imports only person.data below it.
"""
