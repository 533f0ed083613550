"""Real datasets held in memory (CIFAR-FS, miniImageNet, Omniglot, CUB, any image folder), episode
sampling, fixed episode lists and interop with other libraries."""

from __future__ import annotations

from .base import SPLITS as SPLITS
from .base import ArrayDataset as ArrayDataset
from .cifar import CIFARFS as CIFARFS
from .cifar import cifar_fs_classes as cifar_fs_classes
from .cub import CUB as CUB
from .domain import InputDomain as InputDomain
from .domain import convert_inputs as convert_inputs
from .domain import convert_task as convert_task
from .episodes import Episode as Episode
from .episodes import EpisodeList as EpisodeList
from .episodes import sample_episode as sample_episode
from .folder import ImageFolder as ImageFolder
from .generic import class_split as class_split
from .interop import LearnToLearnTasks as LearnToLearnTasks
from .interop import TaskSampler as TaskSampler
from .interop import from_learn2learn as from_learn2learn
from .miniimagenet import MiniImageNet as MiniImageNet
from .omniglot import Omniglot as Omniglot
from .registry import DATASETS as DATASETS
from .registry import dataset_options as dataset_options
from .registry import get_dataset as get_dataset
from .toy import ToyWorldConfig as ToyWorldConfig
from .toy import make_toy_world as make_toy_world

__all__ = [
    "CIFARFS",
    "CUB",
    "DATASETS",
    "SPLITS",
    "ArrayDataset",
    "Episode",
    "EpisodeList",
    "ImageFolder",
    "InputDomain",
    "LearnToLearnTasks",
    "MiniImageNet",
    "Omniglot",
    "TaskSampler",
    "ToyWorldConfig",
    "class_split",
    "cifar_fs_classes",
    "convert_inputs",
    "convert_task",
    "dataset_options",
    "from_learn2learn",
    "get_dataset",
    "make_toy_world",
    "sample_episode",
]
