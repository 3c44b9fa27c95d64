"""The proxy's HTTP application: every route module's handlers on one Klein app.

The routes live in ``proxy.api.routes`` (one module per resource), each declared once with
``@operation`` (``proxy.api.contract``); here they become Klein routes with their access
checks, and errors become JSON answers the way the nodes' do (``common.weberrors``).
"""

from __future__ import annotations

from klein import Klein
from twisted.logger import Logger

from common.weberrors import answer_errors_as_json
from proxy.api.contract import install_routes
from proxy.api.routes.access import AccessRoutes
from proxy.api.routes.accounts import AccountRoutes
from proxy.api.routes.events import EventRoutes
from proxy.api.routes.files import FileRoutes
from proxy.api.routes.s3 import S3Routes
from proxy.api.routes.service import ServiceRoutes
from proxy.api.routes.staff import StaffRoutes
from proxy.api.routes.tus import TusRoutes
from proxy.api.routes.uploads import UploadRoutes
from proxy.api.routes.users import UserRoutes

log = Logger()


class ProxyApp(
    ServiceRoutes,
    AccountRoutes,
    UploadRoutes,
    TusRoutes,
    FileRoutes,
    EventRoutes,
    UserRoutes,
    StaffRoutes,
    S3Routes,
    AccessRoutes,
):
    app = Klein()


install_routes(ProxyApp, ProxyApp.app)
answer_errors_as_json(ProxyApp.app, log, auth_realm="api")
