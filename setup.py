"""Installs padir: generative masked language models and PaDIR in JAX/Flax."""

import setuptools

with open('README.md', encoding='utf-8') as f:
  _LONG_DESCRIPTION = f.read()

_GIN_FOLDERS = ('experiments', 'models', 'objectives', 'runs')

setuptools.setup(
    name='padir',
    version='0.1.0',
    description=('Generative masked language models and PaDIR parallel decoding '
                 '(T5X-style, JAX/Flax).'),
    long_description=_LONG_DESCRIPTION,
    long_description_content_type='text/markdown',
    license='Apache-2.0',
    python_requires='>=3.10',
    # The shipped gin files live once, in the top-level gin/ (no __init__.py there: it must not
    # shadow the gin-config package); a wheel installs them as padir/_shipped/gin.
    packages=setuptools.find_packages(include=['padir', 'padir.*']) + [
        f'padir._shipped.gin.{d}' for d in _GIN_FOLDERS],
    package_dir={f'padir._shipped.gin.{d}': f'gin/{d}' for d in _GIN_FOLDERS},
    package_data={
        'padir': ['data/assets/*', 'data/assets/**/*'],
        **{f'padir._shipped.gin.{d}': ['*.gin'] for d in _GIN_FOLDERS},
    },
    include_package_data=True,
    install_requires=[
        'jax>=0.7,<0.11',
        'flax>=0.11,<0.13',
        'optax>=0.2.4,<0.3',
        'orbax-checkpoint>=0.11,<0.13',
        'gin-config>=0.5,<0.6',
        'numpy>=1.26,<3',
        'sentencepiece>=0.2,<0.3',
        'sacrebleu>=2.4,<3',
        'matplotlib>=3.8,<4',
        'tqdm>=4.66,<5',
        'tensorboardX>=2.6,<3',
        'seqio>=0.0.19,<0.1',
        'tensorflow>=2.18,<2.22',
        'tensorflow-text>=2.18,<2.22',
        'tensorflow-datasets>=4.9.7,<5',
    ],
    extras_require={
        'test': [
            'pytest>=8,<10',
            'torch==2.13.0',
            'transformers>=4.50,<6',
            'safetensors>=0.4,<1',
            'nbclient>=0.10,<1',
            'nbformat>=5.10,<6',
            'ipykernel>=6.29,<8',
        ],
    },
    entry_points={
        'console_scripts': ['padir=padir.cli:main'],
    },
    classifiers=[
        'Programming Language :: Python :: 3',
        'Topic :: Scientific/Engineering :: Artificial Intelligence',
    ],
)
