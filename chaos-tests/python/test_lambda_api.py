"""boto3 and the aws CLI against floe's Lambda REST API, unchanged.

Run by chaos-tests/tests/lambda_api.rs against a real node, with:
  FLOE_HTTP             the node's REST address (host:port)
  FLOE_ACCESS_KEY_ID / FLOE_SECRET_ACCESS_KEY   a key of the cluster
Each assertion is what AWS documents for the operation: status codes,
fields, error codes.
"""

import base64
import datetime
import io
import json
import os
import socket
import subprocess
import tempfile
import threading
import unittest
import uuid
import zipfile

import boto3
import botocore
import botocore.auth
from botocore.config import Config

ENDPOINT = "http://" + os.environ["FLOE_HTTP"]
KEY_ID = os.environ["FLOE_ACCESS_KEY_ID"]
SECRET = os.environ["FLOE_SECRET_ACCESS_KEY"]
REGION = "local"
ROLE = "arn:aws:iam::000000000000:role/ignored-by-floe"


def client(**overrides):
    settings = dict(
        endpoint_url=ENDPOINT,
        region_name=REGION,
        aws_access_key_id=KEY_ID,
        aws_secret_access_key=SECRET,
        config=Config(retries={"max_attempts": 1}, read_timeout=60),
    )
    settings.update(overrides)
    return boto3.client("lambda", **settings)


LAMBDA = client()
# For requests botocore would refuse to send (it checks ranges client-side).
UNCHECKED = client(config=Config(parameter_validation=False, retries={"max_attempts": 1}))


def package(source):
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("app.py", source)
    return buffer.getvalue()


ECHO = package(
    """
import json, socket
def handler(event, context):
    if event.get("report_to"):
        host, port = event["report_to"].split(":")
        with socket.create_connection((host, int(port))) as s:
            s.sendall((event.get("tag", "") + "\\n").encode())
    if event.get("fail"):
        raise ValueError("asked to fail")
    print("handled", json.dumps(event))
    custom = context.client_context.custom if context.client_context else None
    return {"event": event, "version": context.function_version, "arn": context.invoked_function_arn,
            "custom": custom, "tag": "v1"}
"""
)

V2 = package("def handler(event, context):\n    return {'tag': 'v2'}\n")


def unique(prefix):
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def create(name, code=ECHO, **extra):
    return LAMBDA.create_function(
        FunctionName=name, Runtime="python3.11", Role=ROLE, Handler="app.handler", Code={"ZipFile": code}, **extra
    )


def error_of(call):
    """Runs `call`, which must fail, and returns (status, code, response)."""
    try:
        call()
    except botocore.exceptions.ClientError as e:
        return e.response["ResponseMetadata"]["HTTPStatusCode"], e.response["Error"]["Code"], e.response
    raise AssertionError("the call succeeded")


class Listener:
    """A TCP port that functions (network = host) report to."""

    def __init__(self):
        self.server = socket.socket()
        self.server.bind(("127.0.0.1", 0))
        self.server.listen()
        self.address = "127.0.0.1:%d" % self.server.getsockname()[1]
        self.lines = []
        self.seen = threading.Condition()
        threading.Thread(target=self.serve, daemon=True).start()

    def serve(self):
        while True:
            connection, _ = self.server.accept()
            with connection:
                data = connection.makefile().readline().strip()
            with self.seen:
                self.lines.append(data)
                self.seen.notify_all()

    def wait_for(self, line, timeout=30):
        with self.seen:
            return self.seen.wait_for(lambda: line in self.lines, timeout)


class Invocation(unittest.TestCase):
    def test_create_then_invoke_sync_async_dry_run_and_tail(self):
        name = unique("echo")
        created = create(name, Description="first", MemorySize=256, Timeout=10)
        self.assertEqual(created["ResponseMetadata"]["HTTPStatusCode"], 201)
        self.assertEqual(created["FunctionName"], name)
        self.assertEqual(created["FunctionArn"], f"arn:aws:lambda:{REGION}:000000000000:function:{name}")
        self.assertEqual(created["Version"], "$LATEST")
        self.assertEqual(created["State"], "Active")
        self.assertEqual(created["LastUpdateStatus"], "Successful")
        self.assertEqual((created["MemorySize"], created["Timeout"]), (256, 10))
        self.assertEqual(created["CodeSize"], len(ECHO))
        self.assertEqual(len(base64.b64decode(created["CodeSha256"])), 32)
        self.assertTrue(created["RevisionId"])

        result = LAMBDA.invoke(FunctionName=name, Payload=json.dumps({"n": 1}))
        self.assertEqual(result["StatusCode"], 200)
        self.assertEqual(result["ExecutedVersion"], "$LATEST")
        self.assertNotIn("FunctionError", result)
        body = json.loads(result["Payload"].read())
        self.assertEqual(body["event"], {"n": 1})
        self.assertEqual(body["arn"], created["FunctionArn"])

        context = base64.b64encode(json.dumps({"custom": {"who": "boto3"}}).encode()).decode()
        tail = LAMBDA.invoke(FunctionName=name, Payload=b'{"t": 2}', LogType="Tail", ClientContext=context)
        self.assertEqual(json.loads(tail["Payload"].read())["custom"], {"who": "boto3"})
        log = base64.b64decode(tail["LogResult"]).decode()
        self.assertIn("START RequestId", log)
        self.assertIn('handled {"t": 2}', log)
        self.assertIn("REPORT RequestId", log)

        dry = LAMBDA.invoke(FunctionName=name, InvocationType="DryRun")
        self.assertEqual(dry["StatusCode"], 204)

        listener = Listener()
        tag = uuid.uuid4().hex
        event = LAMBDA.invoke(
            FunctionName=name, InvocationType="Event", Payload=json.dumps({"report_to": listener.address, "tag": tag})
        )
        self.assertEqual(event["StatusCode"], 202)
        self.assertTrue(event["ResponseMetadata"]["RequestId"])
        self.assertTrue(listener.wait_for(tag), "the asynchronous invocation never ran")

        failed = LAMBDA.invoke(FunctionName=name, Payload=b'{"fail": true}')
        self.assertEqual(failed["StatusCode"], 200)
        self.assertEqual(failed["FunctionError"], "Unhandled")
        error = json.loads(failed["Payload"].read())
        self.assertEqual(error["errorType"], "ValueError")
        self.assertEqual(error["errorMessage"], "asked to fail")

    def test_the_aws_cli_deploys_and_invokes(self):
        name = unique("cli")
        env = dict(
            os.environ,
            AWS_ACCESS_KEY_ID=KEY_ID,
            AWS_SECRET_ACCESS_KEY=SECRET,
            AWS_DEFAULT_REGION=REGION,
            AWS_CONFIG_FILE="/dev/null",
            AWS_SHARED_CREDENTIALS_FILE="/dev/null",
        )

        def aws(*args):
            completed = subprocess.run(
                ["aws", "lambda", "--endpoint-url", ENDPOINT, "--output", "json", *args],
                env=env,
                capture_output=True,
                text=True,
                timeout=120,
            )
            return completed

        with tempfile.TemporaryDirectory() as directory:
            zip_path = os.path.join(directory, "code.zip")
            with open(zip_path, "wb") as f:
                f.write(ECHO)
            out = aws("create-function", "--function-name", name, "--runtime", "python3.11", "--role", ROLE,
                      "--handler", "app.handler", "--zip-file", "fileb://" + zip_path)
            self.assertEqual(out.returncode, 0, out.stderr)
            self.assertEqual(json.loads(out.stdout)["FunctionName"], name)
            result_path = os.path.join(directory, "out.json")
            out = aws("invoke", "--function-name", name, "--payload", '{"from": "cli"}', result_path)
            self.assertEqual(out.returncode, 0, out.stderr)
            self.assertEqual(json.loads(out.stdout)["StatusCode"], 200)
            with open(result_path) as f:
                self.assertEqual(json.load(f)["event"], {"from": "cli"})
            out = aws("list-functions")
            self.assertIn(name, [f["FunctionName"] for f in json.loads(out.stdout)["Functions"]])
            out = aws("get-function", "--function-name", "no-such-function")
            self.assertNotEqual(out.returncode, 0)
            self.assertIn("ResourceNotFoundException", out.stderr)
            out = aws("delete-function", "--function-name", name)
            self.assertEqual(out.returncode, 0, out.stderr)


class Lifecycle(unittest.TestCase):
    def test_update_publish_and_route_aliases(self):
        name = unique("versions")
        created = create(name)
        updated = LAMBDA.update_function_configuration(
            FunctionName=name, MemorySize=512, Timeout=7, Description="tuned", Environment={"Variables": {"STAGE": "1"}}
        )
        self.assertEqual((updated["MemorySize"], updated["Timeout"]), (512, 7))
        self.assertEqual(updated["Environment"]["Variables"], {"STAGE": "1"})
        self.assertNotEqual(updated["RevisionId"], created["RevisionId"])
        status, code, _ = error_of(
            lambda: LAMBDA.update_function_configuration(FunctionName=name, Timeout=8, RevisionId=created["RevisionId"])
        )
        self.assertEqual((status, code), (412, "PreconditionFailedException"))

        v1 = LAMBDA.publish_version(FunctionName=name, Description="one")
        self.assertEqual(v1["ResponseMetadata"]["HTTPStatusCode"], 201)
        self.assertEqual(v1["Version"], "1")
        self.assertEqual(v1["FunctionArn"], created["FunctionArn"] + ":1")
        again = LAMBDA.publish_version(FunctionName=name)
        self.assertEqual(again["Version"], "1", "publishing an unchanged $LATEST returns the latest version")

        code = LAMBDA.update_function_code(FunctionName=name, ZipFile=V2)
        self.assertEqual(code["CodeSize"], len(V2))
        self.assertEqual(code["Version"], "$LATEST")
        # CodeSha256 is a precondition, checked when the write applies: a stale
        # one publishes nothing; one that is not base64 is refused as such.
        status, error, response = error_of(
            lambda: LAMBDA.publish_version(FunctionName=name, CodeSha256=created["CodeSha256"])
        )
        self.assertEqual((status, error), (400, "InvalidParameterValueException"))
        self.assertIn("is different from current CodeSha256", response["Error"]["Message"])
        status, error, _ = error_of(lambda: LAMBDA.publish_version(FunctionName=name, CodeSha256="not base64!"))
        self.assertEqual((status, error), (400, "InvalidParameterValueException"))
        v2 = LAMBDA.publish_version(FunctionName=name, CodeSha256=code["CodeSha256"])
        self.assertEqual(v2["Version"], "2")
        versions = LAMBDA.list_versions_by_function(FunctionName=name)["Versions"]
        self.assertEqual([v["Version"] for v in versions], ["$LATEST", "1", "2"])

        one = LAMBDA.invoke(FunctionName=name, Qualifier="1", Payload=b"{}")
        self.assertEqual(one["ExecutedVersion"], "1")
        self.assertEqual(json.loads(one["Payload"].read())["tag"], "v1")
        self.assertEqual(LAMBDA.get_function(FunctionName=name, Qualifier="1")["Configuration"]["Version"], "1")

        alias = LAMBDA.create_alias(
            FunctionName=name, Name="live", FunctionVersion="1",
            RoutingConfig={"AdditionalVersionWeights": {"2": 0.5}},
        )
        self.assertEqual(alias["ResponseMetadata"]["HTTPStatusCode"], 201)
        self.assertEqual(alias["AliasArn"], created["FunctionArn"] + ":live")
        self.assertEqual(alias["RoutingConfig"]["AdditionalVersionWeights"], {"2": 0.5})
        self.assertEqual(LAMBDA.get_alias(FunctionName=name, Name="live")["FunctionVersion"], "1")
        seen = {LAMBDA.invoke(FunctionName=name, Qualifier="live", Payload=b"{}")["ExecutedVersion"] for _ in range(40)}
        self.assertEqual(seen, {"1", "2"}, "a 50/50 alias must run both versions in 40 calls")
        seen = {LAMBDA.invoke(FunctionName=f"{name}:live", Payload=b"{}")["ExecutedVersion"] for _ in range(5)}
        self.assertTrue(seen <= {"1", "2"})

        status, code, _ = error_of(
            lambda: LAMBDA.update_alias(FunctionName=name, Name="live", FunctionVersion="2", RevisionId="stale")
        )
        self.assertEqual((status, code), (412, "PreconditionFailedException"))
        plain = LAMBDA.update_alias(FunctionName=name, Name="live", FunctionVersion="2",
                                    RoutingConfig={"AdditionalVersionWeights": {}})
        self.assertNotIn("RoutingConfig", plain)
        seen = {LAMBDA.invoke(FunctionName=name, Qualifier="live", Payload=b"{}")["ExecutedVersion"] for _ in range(5)}
        self.assertEqual(seen, {"2"})
        LAMBDA.create_alias(FunctionName=name, Name="old", FunctionVersion="1")
        self.assertEqual(sorted(a["Name"] for a in LAMBDA.list_aliases(FunctionName=name)["Aliases"]), ["live", "old"])
        self.assertEqual(
            [a["Name"] for a in LAMBDA.list_aliases(FunctionName=name, FunctionVersion="1")["Aliases"]], ["old"]
        )
        deleted = LAMBDA.delete_alias(FunctionName=name, Name="old")
        self.assertEqual(deleted["ResponseMetadata"]["HTTPStatusCode"], 204)
        status, code, _ = error_of(lambda: LAMBDA.get_alias(FunctionName=name, Name="old"))
        self.assertEqual((status, code), (404, "ResourceNotFoundException"))

        self.assertEqual(LAMBDA.delete_function(FunctionName=name)["ResponseMetadata"]["HTTPStatusCode"], 204)
        status, code, _ = error_of(lambda: LAMBDA.get_function_configuration(FunctionName=name))
        self.assertEqual((status, code), (404, "ResourceNotFoundException"))

    def test_publish_on_create_and_update(self):
        name = unique("published")
        created = create(name, Publish=True)
        self.assertEqual(created["Version"], "1")
        self.assertEqual(created["FunctionArn"].rsplit(":", 1)[1], "1")
        updated = LAMBDA.update_function_code(FunctionName=name, ZipFile=package("def handler(e, c):\n    return 2\n"),
                                              Publish=True)
        self.assertEqual(updated["Version"], "2")
        self.assertNotEqual(updated["CodeSha256"], created["CodeSha256"])
        versions = LAMBDA.list_versions_by_function(FunctionName=name)["Versions"]
        self.assertEqual([v["Version"] for v in versions], ["$LATEST", "1", "2"])
        self.assertEqual(versions[2]["CodeSha256"], updated["CodeSha256"])
        # A refused update (stale revision) publishes nothing.
        status, error, _ = error_of(
            lambda: LAMBDA.update_function_code(FunctionName=name, ZipFile=ECHO, Publish=True, RevisionId="stale")
        )
        self.assertEqual((status, error), (412, "PreconditionFailedException"))
        versions = LAMBDA.list_versions_by_function(FunctionName=name)["Versions"]
        self.assertEqual([v["Version"] for v in versions], ["$LATEST", "1", "2"])
        LAMBDA.delete_function(FunctionName=name)

    def test_concurrency_settings_and_throttles(self):
        name = unique("reserved")
        create(name)
        before = LAMBDA.get_account_settings()
        self.assertEqual(before["AccountLimit"]["ConcurrentExecutions"], 100)
        self.assertGreaterEqual(before["AccountUsage"]["FunctionCount"], 1)
        put = LAMBDA.put_function_concurrency(FunctionName=name, ReservedConcurrentExecutions=5)
        self.assertEqual(put["ReservedConcurrentExecutions"], 5)
        self.assertEqual(LAMBDA.get_function_concurrency(FunctionName=name)["ReservedConcurrentExecutions"], 5)
        self.assertEqual(LAMBDA.get_function(FunctionName=name)["Concurrency"]["ReservedConcurrentExecutions"], 5)
        after = LAMBDA.get_account_settings()
        self.assertEqual(
            after["AccountLimit"]["UnreservedConcurrentExecutions"],
            before["AccountLimit"]["UnreservedConcurrentExecutions"] - 5,
        )
        status, code, _ = error_of(
            lambda: LAMBDA.put_function_concurrency(FunctionName=name, ReservedConcurrentExecutions=100)
        )
        self.assertEqual(status // 100, 4, code)

        LAMBDA.put_function_concurrency(FunctionName=name, ReservedConcurrentExecutions=0)
        status, code, response = error_of(lambda: LAMBDA.invoke(FunctionName=name, Payload=b"{}"))
        self.assertEqual((status, code), (429, "TooManyRequestsException"))
        self.assertEqual(response["Reason"], "ReservedFunctionConcurrentInvocationLimitExceeded")
        self.assertEqual(response["ResponseMetadata"]["HTTPHeaders"].get("retry-after"), "1")
        with self.assertRaises(LAMBDA.exceptions.TooManyRequestsException):
            LAMBDA.invoke(FunctionName=name, Payload=b"{}")

        deleted = LAMBDA.delete_function_concurrency(FunctionName=name)
        self.assertEqual(deleted["ResponseMetadata"]["HTTPStatusCode"], 204)
        self.assertNotIn("ReservedConcurrentExecutions", LAMBDA.get_function_concurrency(FunctionName=name))
        self.assertEqual(LAMBDA.invoke(FunctionName=name, Payload=b"{}")["StatusCode"], 200)

    def test_list_functions_pages(self):
        prefix = unique("page")
        names = [f"{prefix}-{i}" for i in range(7)]
        for name in names:
            create(name, code=V2)
        collected, marker, pages = [], None, 0
        while True:
            page = LAMBDA.list_functions(MaxItems=3, **({"Marker": marker} if marker else {}))
            self.assertLessEqual(len(page["Functions"]), 3)
            collected += [f["FunctionName"] for f in page["Functions"]]
            pages += 1
            marker = page.get("NextMarker")
            if not marker:
                break
        self.assertGreater(pages, 2)
        self.assertEqual(len(collected), len(set(collected)), "no function twice")
        self.assertTrue(set(names) <= set(collected))
        paged = [f["FunctionName"] for p in LAMBDA.get_paginator("list_functions").paginate(
            PaginationConfig={"PageSize": 2}) for f in p["Functions"]]
        self.assertEqual(sorted(paged), sorted(collected))
        status, code, _ = error_of(lambda: UNCHECKED.list_functions(MaxItems=0))
        self.assertEqual((status, code), (400, "InvalidParameterValueException"))

    def test_event_invoke_config(self):
        name = unique("events")
        sink = unique("sink")
        create(name)
        create(sink)
        sink_arn = f"arn:aws:lambda:{REGION}:000000000000:function:{sink}"
        put = LAMBDA.put_function_event_invoke_config(
            FunctionName=name, MaximumRetryAttempts=0, MaximumEventAgeInSeconds=120,
            DestinationConfig={"OnFailure": {"Destination": sink_arn}},
        )
        self.assertEqual(put["MaximumRetryAttempts"], 0)
        self.assertEqual(put["MaximumEventAgeInSeconds"], 120)
        self.assertEqual(put["DestinationConfig"]["OnFailure"]["Destination"], sink_arn)
        self.assertIsInstance(put["LastModified"], datetime.datetime)
        updated = LAMBDA.update_function_event_invoke_config(FunctionName=name, MaximumRetryAttempts=1)
        self.assertEqual((updated["MaximumRetryAttempts"], updated["MaximumEventAgeInSeconds"]), (1, 120))
        got = LAMBDA.get_function_event_invoke_config(FunctionName=name)
        self.assertEqual(got["DestinationConfig"]["OnFailure"]["Destination"], sink_arn)
        status, code, _ = error_of(
            lambda: LAMBDA.put_function_event_invoke_config(FunctionName=name, MaximumRetryAttempts=5)
        )
        self.assertEqual((status, code), (400, "InvalidParameterValueException"))
        LAMBDA.delete_function_event_invoke_config(FunctionName=name)
        status, code, _ = error_of(lambda: LAMBDA.get_function_event_invoke_config(FunctionName=name))
        self.assertEqual((status, code), (404, "ResourceNotFoundException"))


class Errors(unittest.TestCase):
    def test_each_error_class(self):
        status, code, response = error_of(lambda: LAMBDA.get_function(FunctionName="no-such-function"))
        self.assertEqual((status, code), (404, "ResourceNotFoundException"))
        self.assertEqual(response["ResponseMetadata"]["HTTPHeaders"]["x-amzn-errortype"], code)
        self.assertTrue(response["Error"]["Message"])
        with self.assertRaises(LAMBDA.exceptions.ResourceNotFoundException):
            LAMBDA.invoke(FunctionName="no-such-function", Payload=b"{}")

        name = unique("errors")
        create(name)
        status, code, _ = error_of(lambda: create(name))
        self.assertEqual((status, code), (409, "ResourceConflictException"))
        with self.assertRaises(LAMBDA.exceptions.ResourceConflictException):
            create(name)

        for bad in [
            dict(MemorySize=64),
            dict(Timeout=901),
            dict(Runtime="cobol85"),
            dict(FunctionName="bad name!"),
            dict(Code={"ZipFile": b"not a zip"}),
            dict(Environment={"Variables": {"1BAD": "x"}}),
        ]:
            request = dict(FunctionName=unique("bad"), Runtime="python3.11", Role=ROLE, Handler="app.handler",
                           Code={"ZipFile": ECHO})
            request.update(bad)
            status, code, _ = error_of(lambda: UNCHECKED.create_function(**request))
            self.assertEqual((status, code), (400, "InvalidParameterValueException"), bad)
        with self.assertRaises(LAMBDA.exceptions.InvalidParameterValueException):
            LAMBDA.invoke(FunctionName=name, Payload=b"not json")

        status, code, response = error_of(
            lambda: LAMBDA.invoke(FunctionName=name, Payload=b'"' + b"x" * (6 * 1024 * 1024) + b'"')
        )
        self.assertEqual((status, code), (413, "RequestEntityTooLargeException"))
        self.assertEqual(
            response["Error"]["Message"], "Request must be smaller than 6291456 bytes for the InvokeFunction operation"
        )
        status, code, _ = error_of(
            lambda: LAMBDA.invoke(FunctionName=name, InvocationType="Event", Payload=b'"' + b"x" * (1024 * 1024 + 10) + b'"')
        )
        self.assertEqual((status, code), (413, "RequestEntityTooLargeException"))
        status, code, _ = error_of(lambda: UNCHECKED.invoke(FunctionName=name, InvocationType="Sometimes"))
        self.assertEqual((status, code), (400, "InvalidParameterValueException"))


class Signatures(unittest.TestCase):
    def test_each_kind_of_signature_failure(self):
        unsigned = client(config=Config(signature_version=botocore.UNSIGNED, retries={"max_attempts": 1}))
        status, code, _ = error_of(lambda: unsigned.list_functions())
        self.assertEqual((status, code), (403, "MissingAuthenticationTokenException"))

        stranger = client(aws_access_key_id="FLOENOSUCHKEY0000000")
        status, code, _ = error_of(lambda: stranger.list_functions())
        self.assertEqual((status, code), (403, "UnrecognizedClientException"))

        wrong = client(aws_access_key_id=KEY_ID, aws_secret_access_key="x" * 64)
        status, code, response = error_of(lambda: wrong.list_functions())
        self.assertEqual((status, code), (403, "InvalidSignatureException"))
        self.assertIn("signature we calculated does not match", response["Error"]["Message"])

        real = botocore.auth.get_current_datetime
        botocore.auth.get_current_datetime = lambda: real() - datetime.timedelta(minutes=20)
        try:
            status, code, response = error_of(lambda: LAMBDA.list_functions())
        finally:
            botocore.auth.get_current_datetime = real
        self.assertEqual((status, code), (403, "InvalidSignatureException"))
        self.assertIn("Signature expired", response["Error"]["Message"])

        # A signed request whose body was changed on the way.
        request = botocore.awsrequest.AWSRequest(
            method="POST", url=ENDPOINT + "/2015-03-31/functions/x/invocations", data=b'{"a": 1}'
        )
        botocore.auth.SigV4Auth(
            botocore.credentials.Credentials(KEY_ID, SECRET), "lambda", REGION
        ).add_auth(request)
        prepared = request.prepare()
        import urllib.request
        tampered = urllib.request.Request(prepared.url, data=b'{"a": 2}', headers=dict(prepared.headers),
                                          method="POST")
        try:
            urllib.request.urlopen(tampered, timeout=10)
            self.fail("a tampered body was accepted")
        except urllib.error.HTTPError as e:
            self.assertEqual(e.code, 403)
            self.assertEqual(e.headers["x-amzn-ErrorType"], "InvalidSignatureException")

        self.assertIn("Functions", LAMBDA.list_functions())


if __name__ == "__main__":
    unittest.main()
