"""Ray Data preprocessing (clean, dedup, split, tokenizer).

    python ray_jobs/preprocess.py --config examples/sentiment_zh.yaml [--set k=v ...]
    ray job submit --working-dir . --runtime-env ray_jobs/runtime_env.yaml -- \
        python ray_jobs/preprocess.py --config examples/sentiment_zh.yaml
"""

from _entry import run_stage

if __name__ == "__main__":
    run_stage("preprocess", __doc__.splitlines()[0])
