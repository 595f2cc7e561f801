"""floe's Python bootstrap: runs `handler(event, context)` behind Lambda's
Runtime API (2018-06-01), one invocation at a time, for as long as the
sandbox lives. Uses only the standard library."""

import http.client
import importlib
import json
import os
import sys
import time
import traceback

RUNTIME_API = os.environ["AWS_LAMBDA_RUNTIME_API"]
BASE = "/2018-06-01/runtime"


class Client:
    """One keep-alive HTTP connection to the node's Runtime API."""

    def __init__(self, address):
        host, _, port = address.rpartition(":")
        self.host, self.port = host, int(port)
        self.conn = None

    def request(self, method, path, body=None, headers=None):
        for attempt in (0, 1):
            if self.conn is None:
                self.conn = http.client.HTTPConnection(self.host, self.port)
            try:
                self.conn.request(method, path, body=body, headers=headers or {})
                response = self.conn.getresponse()
                return response, response.read()
            except (http.client.HTTPException, ConnectionError):
                self.conn.close()
                self.conn = None
                if attempt:
                    raise


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
    return {
        "errorMessage": str(error),
        "errorType": error_type or type(error).__name__,
        "stackTrace": traceback.format_tb(error.__traceback__),
    }


def post_json(client, path, document, error_type=None):
    headers = {"Content-Type": "application/json"}
    if error_type:
        headers["Lambda-Runtime-Function-Error-Type"] = error_type
    client.request("POST", path, body=json.dumps(document).encode(), headers=headers)


def load_handler(client):
    task_root = os.environ.get("LAMBDA_TASK_ROOT", ".")
    sys.path.insert(0, task_root)
    handler = os.environ.get("_HANDLER", "")
    module_name, _, function_name = handler.rpartition(".")
    try:
        if not module_name or not function_name:
            raise ValueError(f"Bad handler '{handler}': expected module.function")
        module = importlib.import_module(module_name.replace("/", "."))
    except Exception as error:  # the handler's module failed to import
        document = error_document(error, "Runtime.ImportModuleError")
        document["errorMessage"] = f"Unable to import module '{module_name}': {error}"
        post_json(client, f"{BASE}/init/error", document, "Runtime.ImportModuleError")
        sys.exit(1)
    function = getattr(module, function_name, None)
    if not callable(function):
        document = {
            "errorMessage": f"Handler '{function_name}' missing on module '{module_name}'",
            "errorType": "Runtime.HandlerNotFound",
            "stackTrace": [],
        }
        post_json(client, f"{BASE}/init/error", document, "Runtime.HandlerNotFound")
        sys.exit(1)
    return function


def main():
    client = Client(RUNTIME_API)
    handler = load_handler(client)
    while True:
        response, body = client.request("GET", f"{BASE}/invocation/next")
        request_id = response.getheader("Lambda-Runtime-Aws-Request-Id")
        deadline_ms = int(response.getheader("Lambda-Runtime-Deadline-Ms") or 0)
        arn = response.getheader("Lambda-Runtime-Invoked-Function-Arn")
        client_context = response.getheader("Lambda-Runtime-Client-Context")
        identity = response.getheader("Lambda-Runtime-Cognito-Identity")
        os.environ["_X_AMZN_TRACE_ID"] = response.getheader("Lambda-Runtime-Trace-Id") or ""
        context = Context(
            request_id,
            deadline_ms,
            arn,
            json.loads(client_context) if client_context else None,
            json.loads(identity) if identity else None,
        )
        try:
            event = json.loads(body) if body else None
        except ValueError as error:
            post_json(client, f"{BASE}/invocation/{request_id}/error",
                      error_document(error, "Runtime.UnmarshalError"), "Runtime.UnmarshalError")
            continue
        try:
            result = handler(event, context)
            payload = json.dumps(result).encode()
        except Exception as error:  # the handler failed: report, keep serving
            traceback.print_exc()
            post_json(client, f"{BASE}/invocation/{request_id}/error", error_document(error),
                      "Unhandled")
            continue
        client.request("POST", f"{BASE}/invocation/{request_id}/response", body=payload,
                       headers={"Content-Type": "application/json"})


if __name__ == "__main__":
    main()
