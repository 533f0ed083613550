"""Real datasets held in memory, episode sampling, fixed episode lists and interop with other libraries."""

from __future__ import annotations

from .base import SPLITS as SPLITS
from .base import ArrayDataset as ArrayDataset
from .cifar import CIFARFS as CIFARFS
from .cifar import cifar_fs_classes as cifar_fs_classes
from .domain import InputDomain as InputDomain
from .domain import convert_inputs as convert_inputs
from .domain import convert_task as convert_task
from .episodes import Episode as Episode
from .episodes import EpisodeList as EpisodeList
from .episodes import sample_episode as sample_episode
from .generic import class_split as class_split
from .interop import LearnToLearnTasks as LearnToLearnTasks
from .interop import TaskSampler as TaskSampler
from .interop import from_learn2learn as from_learn2learn
from .miniimagenet import MiniImageNet as MiniImageNet
from .registry import DATASETS as DATASETS
from .registry import get_dataset as get_dataset
from .toy import ToyWorldConfig as ToyWorldConfig
from .toy import make_toy_world as make_toy_world

__all__ = [
    "CIFARFS",
    "DATASETS",
    "SPLITS",
    "ArrayDataset",
    "Episode",
    "EpisodeList",
    "InputDomain",
    "LearnToLearnTasks",
    "MiniImageNet",
    "TaskSampler",
    "ToyWorldConfig",
    "class_split",
    "cifar_fs_classes",
    "convert_inputs",
    "convert_task",
    "from_learn2learn",
    "get_dataset",
    "make_toy_world",
    "sample_episode",
]
