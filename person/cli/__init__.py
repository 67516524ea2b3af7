"""The commands: each module is argument parsing plus one library call, with `main(argv)` (what the tests call)
and `run()` (the installed entry point, pyproject.toml). Each also has a script at the top of the repository.

    module               entry point           script                        what it does
    extract              person-extract        tools/extract_label.py        the teacher's embeddings into the store
    train                person-train          main.py                       train the students against that store
    evaluate             person-eval           evaluation_model.py           score a checkpoint or its export
    evaluate_labels      person-eval-labels    evaluation_labels.py          score the teacher's (or any) embeddings
    export               person-export         export_model.py               ONNX models, character table and card
    enroll               person-enroll         search/enroll.py              enrol images into a gallery
    search               person-search         search/api.py                 search a gallery from the command line
    serve                person-serve          search/app.py                 serve the search page and its HTTP API
    users                person-users          search/users.py               a gallery's accounts and API tokens
    audit                person-audit          search/audit.py               verify, show and prune the audit log
    forget               person-forget         search/forget.py              erase rows; --max-age retention
    calibrate            person-calibrate      tools/calibrate.py            thresholds at a FAR, on your own data
    demo                 person-demo           demo.py                       the whole pipeline on synthetic data
    make_demo_data       person-demo-data      tools/make_demo_data.py       draw the synthetic demo set
    train_demo_teacher   person-demo-teacher   tools/train_demo_teacher.py   train the shipped demo teacher

A command never imports another: what two share lives in person/.
"""
