"""Batch inference with an exported model over files (`raylm predict`'s options).

python ray_jobs/predict.py outputs/sentiment_zh --input reviews.jsonl --output preds/
raylm submit predict /shared/outputs/sentiment_zh -- --input s3://b/reviews/ --output /shared/p
"""

import sys

import _entry  # noqa: F401  (puts lib/ on the path)

if __name__ == "__main__":
    from raylm.cli import app

    app(["predict", *sys.argv[1:]])
