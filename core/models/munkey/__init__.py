"""MUNKEY: a memory-augmented transformer that forgets by deleting keys.

"Rethinking Machine Unlearning: Models Designed to Forget via Key Deletion" (arXiv 2603.15033). Every
training sample has a memory entry: a key from a frozen, data-independent encoder and a learnable
exemplar token. A query retrieves its K nearest keys and a small ViT reads the image with the retrieved
tokens. Forgetting deletes entries from the memory: no weight moves, and only the forget ids are read.

- ``network``: the configs, the key encoder and the transformer (``MunkeyNet``)
- ``memory``: the frozen keys, their FAISS search, and the state shared by a model and its copies
- ``training``: the fit loop, with the retrieval each training query sees
- ``classifier``: ``MunkeyClassifier`` (prediction, retrieval, ``forget``) and the model registration
"""

from core.models.munkey.classifier import MunkeyClassifier, wrap_munkey
from core.models.munkey.memory import dataset_keys
from core.models.munkey.network import KeyEncoderConfig, MunkeyConfig, MunkeyNet, RandomKeyEncoder, build_munkey
from core.models.munkey.training import fit_munkey, training_neighbours

__all__ = ["KeyEncoderConfig", "MunkeyClassifier", "MunkeyConfig", "MunkeyNet", "RandomKeyEncoder", "build_munkey",
           "dataset_keys", "fit_munkey", "training_neighbours", "wrap_munkey"]
