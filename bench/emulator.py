"""DynamoDB for the bench: moto's backends served by uvicorn, so connections stay open between
requests as they do with DynamoDB itself (moto's own server closes each one, and every request
would pay a new connection in the gateway's CPU figures).

    python -m bench.emulator PORT
"""

import sys

import uvicorn
from moto.server import DomainDispatcherApplication, create_backend_app
from uvicorn.middleware.wsgi import WSGIMiddleware

if __name__ == "__main__":
    from tollway.dev import atomic_moto_writes

    atomic_moto_writes()  # one write at a time, as DynamoDB applies each atomically
    app = WSGIMiddleware(DomainDispatcherApplication(create_backend_app))
    uvicorn.run(app, host="127.0.0.1", port=int(sys.argv[1]), log_level="warning")
