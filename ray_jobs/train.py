"""DeepSpeed training inside Ray Train's TorchTrainer.

    python ray_jobs/train.py --config examples/sentiment_zh.yaml [--set k=v ...]
    ray job submit --working-dir . --runtime-env ray_jobs/runtime_env.yaml -- \
        python ray_jobs/train.py --config examples/sentiment_zh.yaml
"""

from _entry import run_stage

if __name__ == "__main__":
    run_stage("train", __doc__.splitlines()[0])
