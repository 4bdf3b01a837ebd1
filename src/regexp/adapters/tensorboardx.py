"""tensorboardX's parts below its public SummaryWriter (tensorboardX < 2.7, as pyproject.toml
bounds it; tests/test_adapters.py checks each): its record writer, whose CRC is in C with the
crc32c package, and the protos of TensorBoard's events. A SummaryWriter would hand each event
to a background process queue, which costs more than a lesson-24 epoch."""

from tensorboardX import summary as summaries  # noqa: F401 (custom_scalars, hparams)
from tensorboardX.event_file_writer import EventsWriter  # noqa: F401
from tensorboardX.proto.api_pb2 import Status  # noqa: F401
from tensorboardX.proto.event_pb2 import Event, SessionLog  # noqa: F401
from tensorboardX.proto.plugin_hparams_pb2 import HParamsPluginData, SessionEndInfo  # noqa: F401
from tensorboardX.proto.summary_pb2 import Summary, SummaryMetadata  # noqa: F401
