"""Local state: RocksDB stores and the changelog record conventions."""

from processor.state.changelog import LAYOUT_KEY, POSITION_KEY, decode_position, encode_position
from processor.state.store import RocksStore

__all__ = ["LAYOUT_KEY", "POSITION_KEY", "RocksStore", "decode_position", "encode_position"]
