"""The built-in demo: how its shipped parts are made and run, above every stage of the pipeline.

- `teacher_recipe`: trains the demo teacher (tools/train_demo_teacher.py) on the project's own synthetic
  pedestrians, with the schedule of person.train and the metrics of person.eval.
"""
