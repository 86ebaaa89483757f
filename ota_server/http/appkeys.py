"""State stored on the aiohttp application (typed keys)."""

from aiohttp import web

from ota_server.config import ServerConfig
from ota_server.fleet.report_log import ReportStore
from ota_server.http.static import EtagCache
from ota_server.keys.store import KeyStore

CONFIG = web.AppKey("config", ServerConfig)
KEYS = web.AppKey("keys", KeyStore)
ETAGS = web.AppKey("etags", EtagCache)
REPORTS = web.AppKey("reports", ReportStore)
