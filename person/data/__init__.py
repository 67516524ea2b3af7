"""Stage 1, data: a dataset on disk -> normalised records, decoded images, encoded text, batches.

Takes a dataset JSON in any of the four formats (SYNTH-PEDES, CUHK-PEDES, ICFG-PEDES, RSTPReid: read by
formats) and its images; gives `RecordSet` (records), uint8 pixels at the student's size (images; a JPEG whose data
libjpeg calls corrupt is unreadable: jpeg_warnings), UTF-8 bytes per character
(text), identity batches that are a pure function of (seed, batch number) (sampler) and torch datasets
that count unreadable images instead of failing (datasets); `flags` are the commands' options for data files
that moved. (The synthetic demo set is drawn by person.demo.synthetic.) Imports nothing above it.
"""
