"""The built-in demo: how its shipped parts are made and run, above every stage of the pipeline.

- `recipe`: the demo set's size and the students' training recipe (demo.py, bench/ablation.py).
- `prepare`: the demo set and the teacher's store, each made once.
- `pipeline`: the demo's steps end to end (`run_demo`, what demo.py runs); `search_step`: its last one, the
  held-out images enrolled and searched.
- `ablation`, `curve`: the recipe against variants of it, and quality against training minutes (bench/ablation.py).
- `teacher`: the shipped demo teacher, its model and how it is trained (tools/train_demo_teacher.py) on the
  project's own synthetic pedestrians (`synthetic`), with the schedule of person.train and the metrics of
  person.eval.
"""
