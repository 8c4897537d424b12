"""QFM-IQM client SDK: score images on a Triton deployment over gRPC."""
from qfm_client.aio import AsyncQFMClient
from qfm_client.client import QFMClient
from qfm_client.errors import ModelNotReady, QFMError, ServerUnavailable, StorageUnavailable
from qfm_client.sources import list_items
from qfm_client.types import Neighbor, ScoreResult

__all__ = ["QFMClient", "AsyncQFMClient", "ScoreResult", "Neighbor", "QFMError", "ServerUnavailable", "StorageUnavailable",
           "ModelNotReady", "list_items"]
