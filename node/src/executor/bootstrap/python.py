"""floe's Python bootstrap: runs `handler(event, context)` behind Lambda's
Runtime API (2018-06-01), one invocation at a time, for as long as the
sandbox lives.

Start-up time is the cold start users feel, so this imports as little as it
can: it runs under `python -S` (no site-packages scan), speaks HTTP/1.1 over
a raw socket instead of importing http.client (which pulls in ssl and email),
and imports traceback only when a handler fails."""

import _socket
import importlib
import json
import os
import sys
import time

BASE = "/2018-06-01/runtime"


class Client:
    """One keep-alive HTTP/1.1 connection to this sandbox's Runtime API."""

    def __init__(self, address):
        host, _, port = address.rpartition(":")
        self.address = (host, int(port))
        self.sock = None
        self.buffer = bytearray()

    def close(self):
        if self.sock is not None:
            self.sock.close()
        self.sock = None
        self.buffer = bytearray()

    def request(self, method, path, body=b"", headers=()):
        for attempt in (0, 1):
            try:
                if self.sock is None:
                    self.sock = _socket.socket(_socket.AF_INET, _socket.SOCK_STREAM)
                    self.sock.setsockopt(_socket.IPPROTO_TCP, _socket.TCP_NODELAY, 1)
                    self.sock.connect(self.address)
                head = "%s %s HTTP/1.1\r\nHost: runtime\r\nContent-Length: %d\r\n%s\r\n" % (
                    method, path, len(body), "".join("%s: %s\r\n" % h for h in headers))
                self.sock.sendall(head.encode("latin-1") + body)
                return self.read_response()
            except OSError:
                self.close()
                if attempt:
                    raise

    def fill(self):
        chunk = self.sock.recv(1 << 16)
        if not chunk:
            raise ConnectionError("the Runtime API closed the connection")
        self.buffer += chunk

    def read_response(self):
        while True:
            end = self.buffer.find(b"\r\n\r\n")
            if end >= 0:
                break
            self.fill()
        lines = bytes(self.buffer[:end]).decode("latin-1").split("\r\n")
        del self.buffer[:end + 4]
        headers = {}
        for line in lines[1:]:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        length = int(headers.get("content-length", "0"))
        while len(self.buffer) < length:
            self.fill()
        body = bytes(self.buffer[:length])
        del self.buffer[:length]
        return int(lines[0].split(" ", 2)[1]), headers, body


class ClientContext:
    """context.client_context as AWS's runtime builds it: .custom, .env, .client."""

    def __init__(self, document):
        self.custom = document.get("custom")
        self.env = document.get("env")
        client = document.get("client")
        self.client = None
        if isinstance(client, dict):
            self.client = type("Client", (), {})()
            for name in ("installation_id", "app_title", "app_version_name", "app_version_code", "app_package_name"):
                setattr(self.client, name, client.get(name))


class Context:
    """The context object Lambda passes to handlers."""

    def __init__(self, request_id, deadline_ms, invoked_arn, client_context, identity):
        self.aws_request_id = request_id
        self.invoked_function_arn = invoked_arn
        self.function_name = os.environ.get("AWS_LAMBDA_FUNCTION_NAME")
        self.function_version = os.environ.get("AWS_LAMBDA_FUNCTION_VERSION")
        self.memory_limit_in_mb = os.environ.get("AWS_LAMBDA_FUNCTION_MEMORY_SIZE")
        self.log_group_name = os.environ.get("AWS_LAMBDA_LOG_GROUP_NAME")
        self.log_stream_name = os.environ.get("AWS_LAMBDA_LOG_STREAM_NAME")
        self.client_context = client_context
        self.identity = identity
        self._deadline_ms = deadline_ms

    def get_remaining_time_in_millis(self):
        return max(0, self._deadline_ms - int(time.time() * 1000))


def error_document(error, error_type=None):
    import traceback
    return {
        "errorMessage": str(error),
        "errorType": error_type or type(error).__name__,
        "stackTrace": traceback.format_tb(error.__traceback__),
    }


def post_json(client, path, document, error_type=None):
    headers = [("Content-Type", "application/json")]
    if error_type:
        headers.append(("Lambda-Runtime-Function-Error-Type", error_type))
    client.request("POST", path, json.dumps(document).encode(), headers)


def load_handler(client):
    sys.path.insert(0, os.environ.get("LAMBDA_TASK_ROOT", "."))
    handler = os.environ.get("_HANDLER", "")
    module_name, _, function_name = handler.rpartition(".")
    try:
        if not module_name or not function_name:
            raise ValueError("Bad handler '%s': expected module.function" % handler)
        module = importlib.import_module(module_name.replace("/", "."))
    except Exception as error:  # the handler's module failed to import
        document = error_document(error, "Runtime.ImportModuleError")
        document["errorMessage"] = "Unable to import module '%s': %s" % (module_name, error)
        post_json(client, BASE + "/init/error", document, "Runtime.ImportModuleError")
        sys.exit(1)
    function = getattr(module, function_name, None)
    if not callable(function):
        document = {
            "errorMessage": "Handler '%s' missing on module '%s'" % (function_name, module_name),
            "errorType": "Runtime.HandlerNotFound",
            "stackTrace": [],
        }
        post_json(client, BASE + "/init/error", document, "Runtime.HandlerNotFound")
        sys.exit(1)
    return function


def main():
    client = Client(os.environ["AWS_LAMBDA_RUNTIME_API"])
    handler = load_handler(client)
    while True:
        _, headers, body = client.request("GET", BASE + "/invocation/next")
        request_id = headers.get("lambda-runtime-aws-request-id")
        client_context = headers.get("lambda-runtime-client-context")
        identity = headers.get("lambda-runtime-cognito-identity")
        os.environ["_X_AMZN_TRACE_ID"] = headers.get("lambda-runtime-trace-id", "")
        context = Context(
            request_id,
            int(headers.get("lambda-runtime-deadline-ms") or 0),
            headers.get("lambda-runtime-invoked-function-arn"),
            ClientContext(json.loads(client_context)) if client_context else None,
            json.loads(identity) if identity else None,
        )
        try:
            event = json.loads(body) if body else None
        except ValueError as error:
            post_json(client, "%s/invocation/%s/error" % (BASE, request_id),
                      error_document(error, "Runtime.UnmarshalError"), "Runtime.UnmarshalError")
            continue
        try:
            result = handler(event, context)
            payload = json.dumps(result).encode()
        except Exception as error:  # the handler failed: report, keep serving
            import traceback
            traceback.print_exc()
            post_json(client, "%s/invocation/%s/error" % (BASE, request_id), error_document(error), "Unhandled")
            continue
        sys.stdout.flush()
        sys.stderr.flush()
        client.request("POST", "%s/invocation/%s/response" % (BASE, request_id), payload,
                       [("Content-Type", "application/json")])


if __name__ == "__main__":
    main()
