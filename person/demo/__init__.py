"""The built-in demo: how its shipped parts are made and run, above every stage of the pipeline.

- `recipe`: the demo set's size and the students' training recipe (demo.py, bench/ablation.py).
- `prepare`: the demo set and the teacher's store, each made once.
- `teacher_recipe`: trains the demo teacher (tools/train_demo_teacher.py) on the project's own synthetic
  pedestrians, with the schedule of person.train and the metrics of person.eval.
"""
