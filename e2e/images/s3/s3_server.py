"""The s3 image's entrypoint: an S3 endpoint (moto) that serves the iris model and rejects wrong credentials.

e2e tests download a model through KServe's storage initializer, and must also see a download with wrong
credentials fail. moto accepts any credentials unless its IAM authentication is on, so this process turns it
on with ``INITIAL_NO_AUTH_ACTION_COUNT``: exactly the IAM calls that create our user, its policy and its
access key pass unauthenticated; every later request needs that key, including our own bucket set-up, which
so proves the key works. Before declaring itself ready the process also checks that a wrong key is refused,
so a moto that stopped enforcing authentication fails here rather than silently passing e2e tests.

Once the model is in place it prints one line ``credentials: AWS_ACCESS_KEY_ID=... AWS_SECRET_ACCESS_KEY=...``
(the key pair is new at every start) and creates the file ``/tmp/ready`` (for an exec readiness probe).
SIGTERM or SIGINT stops the server and exits 0. Everything is in memory.
"""

from __future__ import annotations

import json
import os
import signal
import sys
from pathlib import Path
from typing import Any

PORT = int(os.environ.get("S3_PORT", "9000"))
BUCKET = os.environ.get("S3_BUCKET", "example-models")
MODEL_PREFIX = "sklearn/iris"
MODEL_FILE = Path(os.environ.get("S3_MODEL_FILE", "/opt/s3/models/sklearn/iris/model.joblib"))
READY_FILE = Path(os.environ.get("S3_READY_FILE", "/tmp/ready"))
USER_NAME = "kserve-e2e"
REGION = "us-east-1"
# CreateUser, PutUserPolicy, CreateAccessKey: the only requests moto serves without authentication.
UNAUTHENTICATED_SETUP_CALLS = 3
S3_POLICY = {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "s3:*", "Resource": "*"}]}


class SetupError(RuntimeError):
    """The store could not be prepared; the message says which step failed."""


def _client(service: str, key_id: str, secret: str) -> Any:
    import boto3  # type: ignore[import-not-found]

    return boto3.client(
        service,
        endpoint_url=f"http://127.0.0.1:{PORT}",
        region_name=REGION,
        aws_access_key_id=key_id,
        aws_secret_access_key=secret,
    )


def _create_credentials() -> tuple[str, str]:
    iam = _client("iam", "setup", "setup")
    iam.create_user(UserName=USER_NAME)
    iam.put_user_policy(UserName=USER_NAME, PolicyName="s3-full-access", PolicyDocument=json.dumps(S3_POLICY))
    key = iam.create_access_key(UserName=USER_NAME)["AccessKey"]
    return str(key["AccessKeyId"]), str(key["SecretAccessKey"])


def _upload_model(key_id: str, secret: str) -> str:
    s3 = _client("s3", key_id, secret)
    s3.create_bucket(Bucket=BUCKET)
    key = f"{MODEL_PREFIX}/{MODEL_FILE.name}"
    s3.upload_file(str(MODEL_FILE), BUCKET, key)
    return f"s3://{BUCKET}/{key}"


def _check_authentication(key_id: str, secret: str, object_key: str) -> None:
    """Fail unless the valid key lists the model by prefix (as the storage initializer does) and a wrong
    key is refused."""
    from botocore.exceptions import ClientError  # type: ignore[import-not-found]

    listing = _client("s3", key_id, secret).list_objects(Bucket=BUCKET, Prefix=MODEL_PREFIX)
    if [item["Key"] for item in listing.get("Contents", [])] != [object_key]:
        raise SetupError(f"listing s3://{BUCKET}/{MODEL_PREFIX} with the valid key misses {object_key}")
    try:
        _client("s3", "AKIAWRONGWRONGWRONG0", "wrong-secret").head_object(Bucket=BUCKET, Key=object_key)
    except ClientError:
        return
    raise SetupError("moto accepted a wrong access key: IAM authentication is not enforced")


def serve() -> int:
    os.environ["INITIAL_NO_AUTH_ACTION_COUNT"] = str(UNAUTHENTICATED_SETUP_CALLS)
    # moto reads its settings at import, so it is imported only now.
    from moto.server import ThreadedMotoServer  # type: ignore[import-not-found]

    stop_requested = []
    signal.signal(signal.SIGTERM, lambda signo, _frame: stop_requested.append(signo))
    signal.signal(signal.SIGINT, lambda signo, _frame: stop_requested.append(signo))

    server = ThreadedMotoServer(ip_address="0.0.0.0", port=PORT, verbose=False)
    server.start()
    try:
        if not MODEL_FILE.is_file():
            raise SetupError(f"model file {MODEL_FILE} is missing")
        key_id, secret = _create_credentials()
        uri = _upload_model(key_id, secret)
        _check_authentication(key_id, secret, uri.removeprefix(f"s3://{BUCKET}/"))
        print(f"serving {uri} on port {PORT} (bucket {BUCKET}, region {REGION})", flush=True)
        print(f"credentials: AWS_ACCESS_KEY_ID={key_id} AWS_SECRET_ACCESS_KEY={secret}", flush=True)
        READY_FILE.write_text(f"{uri}\n")
        while not stop_requested:
            signal.pause()
        print(f"stopping on signal {stop_requested[0]}", flush=True)
        return 0
    except Exception as exc:
        print(f"s3: {exc.__class__.__name__}: {exc}", file=sys.stderr, flush=True)
        return 1
    finally:
        server.stop()


if __name__ == "__main__":
    sys.exit(serve())
