"""State stored on the aiohttp application (typed keys)."""

from aiohttp import web

from ota_server.config import ServerConfig
from ota_server.director.service import DirectorKeys, ImageCatalog
from ota_server.fleet.db import Database
from ota_server.fleet.events import EventStore
from ota_server.http.identity import ProxyTrust
from ota_server.http.static import EtagCache
from ota_server.repository.home import RepositoryHome

CONFIG = web.AppKey("config", ServerConfig)
IMAGE = web.AppKey("image", RepositoryHome)  # the repository whose online roles are re-signed
ETAGS = web.AppKey("etags", EtagCache)
DATABASE = web.AppKey("database", Database)  # opened and disposed by a cleanup_ctx
EVENTS = web.AppKey("events", EventStore)
DIRECTOR = web.AppKey("director", DirectorKeys)  # absent: the Director's keys are not here
IMAGE_CATALOG = web.AppKey("image_catalog", ImageCatalog)
TLS = web.AppKey("tls", bool)  # vehicles are authenticated by certificate (else: tests, demos)
PROXY = web.AppKey("proxy", ProxyTrust)  # absent: no proxy identifies vehicles
