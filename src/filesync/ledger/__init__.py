"""The transfer ledger: the durable record of every file and of each step it still has to take."""
from filesync.ledger.store import FileRecord, Ledger, TaskRecord

__all__ = ["FileRecord", "Ledger", "TaskRecord"]
