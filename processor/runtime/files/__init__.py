"""Files as batch inputs and outputs: rows read in bounded chunks (jsonl, csv, parquet) and
sink files that appear whole or not at all. A library without Kafka, used by `processor batch`.

Reading: `paths.expand` finds the files, `read.read_rows` yields their rows in order.
Writing: `write.FileSinkWriter` fills a temp file and renames it over the target on commit.
"""
