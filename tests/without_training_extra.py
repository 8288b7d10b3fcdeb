"""The first lines of a script for a fresh interpreter in which torch, onnx and pytorch-metric-learning
cannot be imported: the runtime install a kiosk has."""

BLOCK_TRAINING_EXTRA = """
import sys
class Block:
    def find_spec(self, name, path=None, target=None):
        if name.split('.')[0] in ('torch', 'onnx', 'pytorch_metric_learning'):
            raise ImportError('blocked: ' + name)
sys.meta_path.insert(0, Block())
"""
