"""Artifacts shared by the AOT tests, each compiled once per session through the real ``lowbit compile`` CLI."""
from __future__ import annotations

from pathlib import Path

import pytest

pytest.importorskip("torch")
pytest.importorskip("triton")

from lowbit.cli import main as cli_main  # noqa: E402

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"

#: name -> command-line arguments after ``lowbit compile`` (the output directory is added)
RECIPES = {
    "vadd_llvm": [str(EXAMPLES / "vector_add.lbk"), "--target", "tvm:llvm"],
    "vadd_sm80": [str(EXAMPLES / "vector_add.lbk"), "--target", "triton:sm_80", "--const", "BLOCK=128"],
    "gemm_u4_llvm": [str(EXAMPLES / "lowbit_gemm.lbk"), "--target", "tvm:llvm", "--const", "W=u4"],
    "gemm_f4_sm90": [str(EXAMPLES / "lowbit_gemm.lbk"), "--target", "triton:sm_90", "--const", "W=f4e2m1",
                     "--const", "BM=64", "--const", "BN=64", "--const", "BK=64"],
    "gemm_i3_sm80_div": [str(EXAMPLES / "lowbit_gemm.lbk"), "--target", "triton:sm_80", "--const", "W=int3",
                         "--const", "BM=32", "--const", "BN=64", "--const", "BK=64", "--divisible", "b"],
}


@pytest.fixture(scope="session", autouse=True)
def _private_cache(tmp_path_factory):
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("LOWBIT_CACHE_DIR", str(tmp_path_factory.mktemp("lowbit-cache")))
        yield


class ArtifactFactory:
    def __init__(self, root: Path):
        self.root = root
        self.built: dict[str, Path] = {}

    def __call__(self, name: str) -> Path:
        if name not in self.built:
            out = self.root / name
            assert cli_main(["compile", *RECIPES[name], "-o", str(out), "-q"]) == 0
            self.built[name] = out
        return self.built[name]


@pytest.fixture(scope="session")
def artifact(tmp_path_factory) -> ArtifactFactory:
    """``artifact("gemm_f4_sm90")`` -> the directory of that recipe's artifact (compiled on first use)."""
    return ArtifactFactory(tmp_path_factory.mktemp("artifacts"))


@pytest.fixture
def rng():
    import numpy as np

    return np.random.default_rng(1234)
