"""Retry and forget for the operator views (the web page, the rqt plugin), over either generation's ledger client."""


class LedgerActions:
    """Retry and forget through the ledger's manage service (the ledger node announces the change on
    /filesync/events, so workers take a retried file at once and the finder lists a forgotten one again)."""

    def __init__(self, connect, unavailable, timeout):
        self.connect = connect  # timeout -> a client with files(state) and manage(action, file_id)
        self.unavailable = unavailable  # what connect() and the client raise when the ledger does not answer
        self.timeout = timeout

    def _manage(self, action, file_id, ledger=None):
        try:
            ledger = ledger or self.connect(self.timeout)
            ok, message, _ = ledger.manage(action, int(file_id))
        except self.unavailable as error:
            return False, str(error)
        return ok, message

    def retry(self, file_id):
        """Put a parked file back in line: (ok, message)."""
        return self._manage("retry", file_id)

    def forget(self, file_id):
        """Drop a file from the ledger: (ok, message)."""
        return self._manage("forget", file_id)

    def retry_all(self):
        """Retry every parked file (all of them, not only those the status lists): (ok, message)."""
        try:
            ledger = self.connect(self.timeout)
            failed = ledger.files("failed")
        except self.unavailable as error:
            return False, str(error)
        done = [file_id for file_id in (record.id for record in failed)
                if self._manage("retry", file_id, ledger)[0]]
        return len(done) == len(failed), f"{len(done)} of {len(failed)} parked file(s) back in line"
