"""The admin API's reads of the request log while its writer is still setting the file up."""

import asyncio
import sqlite3
from types import SimpleNamespace

from llmgate.operations import request_log
from llmgate.operations.admin_api import AdminApi


def test_a_log_file_without_its_table_yet_reads_as_empty(tmp_path):
    """The writer thread creates the file, then its table: a read in between is not a 503."""
    path = tmp_path / "log.sqlite"
    sqlite3.connect(path).close()  # the file exists, the table does not
    log = SimpleNamespace(read=request_log.SqliteSink(path).read)
    api = AdminApi(SimpleNamespace(request_log=log), lambda: "proxy.yaml", lambda: None)
    assert asyncio.run(api._read(request_log.count)) == 0
    assert asyncio.run(api._read(request_log.history)) == []
    assert asyncio.run(api._read(request_log.detail, 1)) is None
