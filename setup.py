"""vidgen: a JAX framework for text-to-video generation (causal video VAE + latent DiT)."""
import setuptools

setuptools.setup(
    name="vidgen",
    version="0.1.0",
    description="JAX text-to-video: causal 3D video VAE + spacetime-patch DiT trained with rectified flow.",
    long_description=open("README.md").read() if __import__("os").path.exists("README.md") else "",
    long_description_content_type="text/markdown",
    packages=setuptools.find_packages(include=["vidgen", "vidgen.*"]),
    python_requires=">=3.11",  # jax >= 0.7 needs Python 3.11
    install_requires=[
        "jax>=0.7.1",  # jax.set_mesh
        "flax>=0.11.2",  # the first flax whose sharding constraints see the mesh of jax.set_mesh
        "optax>=0.2.4",
        "orbax-checkpoint>=0.11",
        "tensorflow-datasets>=4.9.8",
        "importlib_resources",  # tensorflow-datasets 4.9.x imports it without declaring it
        "array-record>=0.7",
        "grain>=0.2.10",
        "ml-collections>=1.0",
        "absl-py>=2.1",
        "av>=14",  # PyAV: mp4 writing and reading
        "pillow>=10",
        "tqdm>=4.66",
        "tensorboardX>=2.6",
        "numpy>=1.26",
        "safetensors>=0.4",  # public weights, read tensor by tensor (vidgen/weights)
        "tokenizers>=0.20",  # UMT5's tokenizer.json
        "sentencepiece>=0.2",  # UMT5's spiece.model
        "ftfy>=6",  # Wan's prompt cleaning, as its reference pipeline does it
    ],
    extras_require={
        "test": ["pytest>=8", "pytest-xdist>=3.5", "nbclient>=0.10", "nbformat>=5.10", "ipykernel>=6.29"],
        "gpu": ["jax[cuda12]"],
        "tpu": ["jax[tpu]"],
        "experiments": ["matplotlib>=3.8"],  # the plots of experiments/ (time_to_quality.py); not the library
        # The reference implementations: tests/fixtures/wan/make_fixtures.py and vidgen.weights.convert_pth only.
        "reference": ["torch==2.13.0", "diffusers>=0.35", "transformers>=4.50", "sentencepiece>=0.2", "ftfy"],
    },
)
