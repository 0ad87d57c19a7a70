"""The generation SPM (Zheng et al., CVPR 2026, arXiv 2603.22870): network, diffusion, training, model."""

from core.models.gen_spm.model import GPU_CONFIG, NAMED_CONFIGS, GenerativeSPM, GenSPMConfig

__all__ = ["GPU_CONFIG", "NAMED_CONFIGS", "GenSPMConfig", "GenerativeSPM"]
