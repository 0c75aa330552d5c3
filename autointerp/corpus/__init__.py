"""Text sources to fixed-length token windows: text and JSONL files, Parquet/CSV/Arrow tables, Hugging
Face datasets (`sources`, `datasets`)."""
