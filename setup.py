"""tfrrl: unified multi-entity, multi-domain matching (RRL) on TensorFlow / Keras 3."""

from setuptools import find_packages, setup

# Pinned as measured: scann 1.4.2's TF ops load on TF 2.20 (not 2.21), and
# apache-beam 2.77 co-installs with TF 2.20 with a clean `pip check`.
INSTALL_REQUIRES = [
    "tensorflow==2.20.0",
    "keras==3.15.1",
    "keras-rs==0.4.0",
    "scann==1.4.2",
    "faiss-cpu==1.15.1",
    "hnswlib==0.8.0",
    "apache-beam[tfrecord]==2.77.0",
    # Beam's TFRecord sink falls back to a pure-Python CRC32C without it (measured: slow).
    "google-crc32c==1.9.0",
    "tensorflow-serving-api==2.20.0",
    "grpcio==1.85.3",
    "grpcio-health-checking==1.81.1",
    "grpcio-reflection==1.81.1",
    "pyarrow==25.0.1",
    "numpy==2.4.6",
    "PyYAML==6.0.4",
    "matplotlib==3.11.2",
    # Item-item CF reference baseline (tfrrl/evaluation/references.py): sparse co-occurrence.
    "scipy==1.15.3",
]

setup(
    name="tfrrl",
    version="0.1.0",
    description=("Robust Representation Learning for unified online top-k recommendation: "
                 "multi-entity, multi-domain matching with Beam, Keras 3 and TF Serving"),
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    python_requires=">=3.10,<3.12",
    packages=find_packages(include=["tfrrl", "tfrrl.*", "beam_pipelines", "beam_pipelines.*",
                                    "tfrrl_serving", "tfrrl_serving.*", "tfrrl_cli",
                                    "tfrrl_cli.*"]),
    install_requires=INSTALL_REQUIRES,
    extras_require={
        "dataflow": ["apache-beam[gcp,tfrecord]==2.77.0"],
        "dev": ["pytest==9.2.0", "pytest-xdist==3.8.0", "psutil==7.2.2", "grpcio-tools==1.81.1"],
    },
    entry_points={"console_scripts": ["tfrrl=tfrrl_cli.main:main"]},
)
