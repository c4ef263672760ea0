"""The wire contract, with the real boto3: every validation rule, every error code,
signatures, body limits, listing filters and pagination. Jobs here fail fast (their
model prefix is empty) so the suite needs no long runs; test_job_lifecycle.py runs
real ones."""

from __future__ import annotations

import copy
import datetime
import http.client
import json
import time

import botocore
import pytest
from botocore.config import Config

from conftest import ROLE, create_request, sagemaker, wait_for_status
from shapes import check_response


def error_of(excinfo) -> tuple[str, str]:
    err = excinfo.value.response["Error"]
    return err["Code"], err["Message"]


def quick_request(name: str, **overrides) -> dict:
    """A job whose worker fails at once: no objects under its model prefix."""
    return create_request(name, ModelSource={"S3": {"S3Uri": "s3://models/nothing-here/"}}, **overrides)


def _set(path: list, value):
    def mutate(req: dict) -> dict:
        req = copy.deepcopy(req)
        target = req
        for key in path[:-1]:
            target = target[key]
        if value is _DELETE:
            del target[path[-1]]
        else:
            target[path[-1]] = value
        return req

    return mutate


_DELETE = object()

# (id, change to a valid request, text the ValidationException message must contain)
INVALID_CREATES = [
    # Options are parsed at Create: a bad value is refused by name, not a failed job.
    (
        "tp-degree-zero",
        _set(["OptimizationConfigs"], [{"ModelShardingConfig": {"OverrideEnvironment": {"OPTION_TENSOR_PARALLEL_DEGREE": "0"}}}]),
        "OPTION_TENSOR_PARALLEL_DEGREE=0",
    ),
    (
        "tp-degree-negative",
        _set(["OptimizationConfigs"], [{"ModelShardingConfig": {"OverrideEnvironment": {"OPTION_TENSOR_PARALLEL_DEGREE": "-2"}}}]),
        "OPTION_TENSOR_PARALLEL_DEGREE=-2",
    ),
    (
        "tp-degree-not-a-number",
        _set(["OptimizationConfigs"], [{"ModelShardingConfig": {"OverrideEnvironment": {"OPTION_TENSOR_PARALLEL_DEGREE": "abc"}}}]),
        "OPTION_TENSOR_PARALLEL_DEGREE=abc",
    ),
    (
        "quantize-method-unknown",
        _set(["OptimizationConfigs"], [{"ModelQuantizationConfig": {"OverrideEnvironment": {"OPTION_QUANTIZE": "int3"}}}]),
        "OPTION_QUANTIZE=int3",
    ),
    (
        "shard-before-quantize",
        _set(
            ["OptimizationConfigs"],
            [{"ModelShardingConfig": {}}, {"ModelQuantizationConfig": {"OverrideEnvironment": {"OPTION_QUANTIZE": "fp8"}}}],
        ),
        "must be the last",
    ),
    ("name-pattern", _set(["OptimizationJobName"], "bad_name!"), "optimizationJobName"),
    ("name-too-long", _set(["OptimizationJobName"], "a" * 64), "optimizationJobName"),
    ("name-missing", _set(["OptimizationJobName"], _DELETE), "optimizationJobName"),
    ("role-pattern", _set(["RoleArn"], "arn:aws:iam::12:role/too-short-account"), "roleArn"),
    ("role-missing", _set(["RoleArn"], _DELETE), "roleArn"),
    ("instance-enum", _set(["DeploymentInstanceType"], "ml.c5.xlarge"), "deploymentInstanceType"),
    ("instance-missing", _set(["DeploymentInstanceType"], _DELETE), "deploymentInstanceType"),
    ("model-source-missing", _set(["ModelSource"], _DELETE), "modelSource"),
    ("s3-uri-pattern", _set(["ModelSource"], {"S3": {"S3Uri": "ftp://models/x"}}), "s3Uri"),
    ("s3-uri-too-long", _set(["ModelSource"], {"S3": {"S3Uri": "s3://models/" + "k" * 1100}}), "s3Uri"),
    ("max-instance-count-min", _set(["MaxInstanceCount"], 0), "maxInstanceCount"),
    ("env-too-many", _set(["OptimizationEnvironment"], {f"OPTION_X{i}": "1" for i in range(26)}), "optimizationEnvironment"),
    ("env-value-too-long", _set(["OptimizationEnvironment"], {"OPTION_X": "v" * 257}), "optimizationEnvironment"),
    ("env-key-blank", _set(["OptimizationEnvironment"], {"   ": "v"}), "optimizationEnvironment"),
    ("configs-missing", _set(["OptimizationConfigs"], _DELETE), "optimizationConfigs"),
    ("configs-too-many", _set(["OptimizationConfigs"], [{"ModelQuantizationConfig": {}}] * 11), "optimizationConfigs"),
    ("union-empty", _set(["OptimizationConfigs"], [{}]), "optimizationConfigs"),
    (
        "union-two-keys",
        _set(["OptimizationConfigs"], [{"ModelQuantizationConfig": {}, "ModelShardingConfig": {}}]),
        "optimizationConfigs",
    ),
    (
        "override-env-too-many",
        _set(
            ["OptimizationConfigs"],
            [{"ModelQuantizationConfig": {"OverrideEnvironment": {f"OPTION_Y{i}": "1" for i in range(26)}}}],
        ),
        "overrideEnvironment",
    ),
    ("image-pattern", _set(["OptimizationConfigs"], [{"ModelQuantizationConfig": {"Image": "has space"}}]), "image"),
    (
        "speculative-technique-enum",
        _set(["OptimizationConfigs"], [{"ModelSpeculativeDecodingConfig": {"Technique": "MEDUSA"}}]),
        "technique",
    ),
    ("output-missing", _set(["OutputConfig"], _DELETE), "outputConfig"),
    ("output-location-missing", _set(["OutputConfig"], {}), "s3OutputLocation"),
    ("kms-pattern", _set(["OutputConfig"], {"S3OutputLocation": "s3://out/x/", "KmsKeyId": "bad key!"}), "kmsKeyId"),
    ("stopping-missing", _set(["StoppingCondition"], _DELETE), "stoppingCondition"),
    ("max-runtime-min", _set(["StoppingCondition"], {"MaxRuntimeInSeconds": 0}), "maxRuntimeInSeconds"),
    ("max-pending-min", _set(["StoppingCondition"], {"MaxPendingTimeInSeconds": 0}), "maxPendingTimeInSeconds"),
    ("tags-too-many", _set(["Tags"], [{"Key": f"k{i}", "Value": "v"} for i in range(51)]), "tags"),
    ("tag-key-empty", _set(["Tags"], [{"Key": "", "Value": "v"}]), "key"),
    ("tag-value-missing", _set(["Tags"], [{"Key": "k"}]), "value"),
    ("vpc-subnets-missing", _set(["VpcConfig"], {"SecurityGroupIds": ["sg-12345678"]}), "subnets"),
    ("wrong-type", _set(["MaxInstanceCount"], "two"), "maxInstanceCount"),
    ("local-path-without-root", _set(["ModelSource"], {"S3": {"S3Uri": "/tmp/model"}}), "s3Uri"),
    ("https-source", _set(["ModelSource"], {"S3": {"S3Uri": "https://example.com/model/"}}), "https"),
    (
        "registry-source",
        _set(["ModelSource"], {"SageMakerModel": {"ModelName": "my-model"}}),
        "registry",
    ),
]


@pytest.fixture
def raw(server):
    """A client that sends what it is given (no client-side validation)."""
    return server.client(parameter_validation=False)


@pytest.mark.parametrize("case,mutate,member", INVALID_CREATES, ids=[c[0] for c in INVALID_CREATES])
def test_each_validation_rule_is_enforced(raw, case, mutate, member):
    req = mutate(quick_request(f"v-{case}"))
    with pytest.raises(botocore.exceptions.ClientError) as e:
        raw.create_optimization_job(**req)
    code, message = error_of(e)
    assert code == "ValidationException", message
    assert e.value.response["ResponseMetadata"]["HTTPStatusCode"] == 400
    assert member.lower() in message.lower(), message
    # Nothing was created.
    assert raw.list_optimization_jobs()["OptimizationJobSummaries"] == []


INVALID_LISTS = [
    ({"MaxResults": 0}, "maxResults"),
    ({"MaxResults": 101}, "maxResults"),
    ({"SortBy": "Size"}, "sortBy"),
    ({"SortOrder": "Up"}, "sortOrder"),
    ({"StatusEquals": "DONE"}, "statusEquals"),
    ({"NameContains": "no spaces allowed"}, "nameContains"),
    ({"NameContains": "x" * 64}, "nameContains"),
    ({"NextToken": "not-a-token"}, "NextToken"),
]


@pytest.mark.parametrize("params,member", INVALID_LISTS, ids=[m for _, m in INVALID_LISTS])
def test_list_validation(raw, params, member):
    with pytest.raises(botocore.exceptions.ClientError) as e:
        raw.list_optimization_jobs(**params)
    code, message = error_of(e)
    assert code == "ValidationException"
    assert member.lower() in message.lower(), message


def test_name_validation_on_describe_stop_delete(raw):
    for call in (raw.describe_optimization_job, raw.stop_optimization_job, raw.delete_optimization_job):
        with pytest.raises(botocore.exceptions.ClientError) as e:
            call(OptimizationJobName="../../etc/passwd")
        assert error_of(e)[0] == "ValidationException"


def test_error_codes(server, raw):
    sm = server.client()
    created = sm.create_optimization_job(**quick_request("dup"))
    check_response("CreateOptimizationJob", created)
    assert created["OptimizationJobArn"] == "arn:aws:sagemaker:us-east-1:123456789012:optimization-job/dup"

    with pytest.raises(sm.exceptions.ResourceInUse) as e:
        sm.create_optimization_job(**quick_request("dup"))
    assert "dup" in error_of(e)[1]

    for call in (sm.describe_optimization_job, sm.stop_optimization_job, sm.delete_optimization_job):
        with pytest.raises(sm.exceptions.ResourceNotFound) as e:
            call(OptimizationJobName="no-such-job")
        assert "no-such-job" in error_of(e)[1]

    # An operation this service lacks.
    status, body = post(server, "SageMaker.CreateTrainingJob", b"{}", signed=True)
    assert status == 400 and body["__type"] == "UnknownOperationException"
    # Bodies that are not JSON objects.
    status, body = post(server, "SageMaker.DescribeOptimizationJob", b"{not json", signed=True)
    assert status == 400 and body["__type"] == "ValidationException" and "JSON" in body["message"]


def test_resource_limit_exceeded(make_server):
    server = make_server("--max-jobs", "2")
    sm = server.client()
    sm.create_optimization_job(**quick_request("one"))
    sm.create_optimization_job(**quick_request("two"))
    with pytest.raises(sm.exceptions.ResourceLimitExceeded) as e:
        sm.create_optimization_job(**quick_request("three"))
    assert "--max-jobs" in error_of(e)[1]
    wait_for_status(sm, "one", {"FAILED"})
    sm.delete_optimization_job(OptimizationJobName="one")
    sm.create_optimization_job(**quick_request("three"))


def test_unsigned_and_badly_signed_requests_are_refused(server):
    unsigned = server.client(signature_version=botocore.UNSIGNED)
    with pytest.raises(botocore.exceptions.ClientError) as e:
        unsigned.list_optimization_jobs()
    assert error_of(e)[0] == "MissingAuthenticationTokenException"
    assert e.value.response["ResponseMetadata"]["HTTPStatusCode"] == 403

    wrong_secret = sagemaker(server.url, secret_key="not-the-secret")
    with pytest.raises(botocore.exceptions.ClientError) as e:
        wrong_secret.create_optimization_job(**quick_request("never"))
    assert error_of(e)[0] == "InvalidSignatureException"

    unknown_key = sagemaker(server.url, access_key="AKIDUNKNOWN")
    with pytest.raises(botocore.exceptions.ClientError) as e:
        unknown_key.list_optimization_jobs()
    assert error_of(e)[0] == "UnrecognizedClientException"

    # A valid signature over another body: the server checks the body's hash.
    status, body = post(server, "SageMaker.ListOptimizationJobs", b"{}", signed=True, tamper=b'{"MaxResults": 1}')
    assert status == 403 and body["__type"] == "InvalidSignatureException"

    # Nothing was created by any of them.
    assert server.client().list_optimization_jobs()["OptimizationJobSummaries"] == []


def test_signatures_cover_the_operation_and_temper_paths(server):
    from botocore.auth import SigV4Auth
    from botocore.awsrequest import AWSRequest
    from botocore.credentials import Credentials

    from conftest import ACCESS_KEY, SECRET_KEY

    # Signed without X-Amz-Target, which is added afterwards: a captured request could
    # otherwise be replayed as another operation.
    body = b'{"OptimizationJobName": "x"}'
    req = AWSRequest(method="POST", url=server.url + "/", data=body, headers={"Content-Type": "application/x-amz-json-1.1"})
    SigV4Auth(Credentials(ACCESS_KEY, SECRET_KEY), "sagemaker", "us-east-1").add_auth(req)
    headers = dict(req.headers.items())
    headers["X-Amz-Target"] = "SageMaker.DeleteOptimizationJob"
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=30)
    conn.request("POST", "/", body=body, headers=headers)
    resp = conn.getresponse()
    reply = json.loads(resp.read())
    assert resp.status == 403 and "x-amz-target" in reply["message"], reply

    # Signed for another service.
    req = AWSRequest(method="POST", url=server.url + "/", data=b"{}", headers={"X-Amz-Target": "SageMaker.ListOptimizationJobs"})
    SigV4Auth(Credentials(ACCESS_KEY, SECRET_KEY), "s3", "us-east-1").add_auth(req)
    conn.request("POST", "/", body=b"{}", headers=dict(req.headers.items()))
    resp = conn.getresponse()
    assert resp.status == 403 and json.loads(resp.read())["__type"] == "InvalidSignatureException"

    # temper's own views need a signature too.
    conn.request("GET", "/temper/jobs/anything/progress")
    resp = conn.getresponse()
    assert resp.status == 403
    assert json.loads(resp.read())["__type"] == "MissingAuthenticationTokenException"
    conn.close()


def test_request_bodies_are_size_limited(server):
    body = json.dumps({"OptimizationJobName": "x" * (2 << 20)}).encode()
    status, reply = post(server, "SageMaker.DescribeOptimizationJob", body, signed=False)
    assert status == 413
    assert reply["__type"] == "RequestEntityTooLargeException"


def test_a_client_that_sends_its_headers_slowly_is_cut_off(make_server):
    import socket

    server = make_server("--header-timeout-secs", "1")
    slow = socket.create_connection(("127.0.0.1", server.port), timeout=10)
    started = time.monotonic()
    slow.sendall(b"POST / HTTP/1.1\r\nHost: x\r\n")  # and never the rest of the head
    assert slow.recv(1024) == b"", "the server answered instead of closing"
    waited = time.monotonic() - started
    slow.close()
    assert 0.9 <= waited < 8, waited
    # Others are served meanwhile and afterwards.
    assert server.client().list_optimization_jobs()["OptimizationJobSummaries"] == []


def post(server, target: str, body: bytes, signed: bool, tamper: bytes | None = None):
    """A raw POST, signed with botocore's own signer when asked."""
    headers = {"X-Amz-Target": target, "Content-Type": "application/x-amz-json-1.1"}
    if signed:
        from botocore.auth import SigV4Auth
        from botocore.awsrequest import AWSRequest
        from botocore.credentials import Credentials

        from conftest import ACCESS_KEY, SECRET_KEY

        req = AWSRequest(method="POST", url=server.url + "/", data=body, headers=headers)
        SigV4Auth(Credentials(ACCESS_KEY, SECRET_KEY), "sagemaker", "us-east-1").add_auth(req)
        headers = dict(req.headers.items())
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=30)
    conn.request("POST", "/", body=tamper if tamper is not None else body, headers=headers)
    resp = conn.getresponse()
    data = resp.read()
    conn.close()
    return resp.status, json.loads(data)


def test_list_filters_sorting_and_pagination(server):
    sm = server.client()
    names = [f"job-{i:02d}" for i in range(12)]
    middle = None
    for i, name in enumerate(names):
        if i == 6:
            # botocore sends timestamps in whole seconds: keep the halves seconds apart.
            time.sleep(1.2)
            middle = datetime.datetime.now(datetime.timezone.utc)
            time.sleep(1.2)
        # Options valid at Create (they are parsed there); the jobs fail in their workers.
        configs = (
            [{"ModelQuantizationConfig": {"OverrideEnvironment": {"OPTION_QUANTIZE": "fp8"}}}]
            if i % 2 == 0
            else [{"ModelShardingConfig": {"OverrideEnvironment": {"OPTION_TENSOR_PARALLEL_DEGREE": "1"}}}]
        )
        sm.create_optimization_job(**quick_request(name, OptimizationConfigs=configs))
    for name in names:
        wait_for_status(sm, name, {"FAILED"})

    listed = sm.list_optimization_jobs()
    check_response("ListOptimizationJobs", listed)
    got = [j["OptimizationJobName"] for j in listed["OptimizationJobSummaries"]]
    assert got == names, "default: CreationTime ascending, MaxResults 50"
    assert "NextToken" not in listed

    by_name = sm.list_optimization_jobs(SortBy="Name", SortOrder="Descending")
    assert [j["OptimizationJobName"] for j in by_name["OptimizationJobSummaries"]] == names[::-1]

    quant = sm.list_optimization_jobs(OptimizationContains="quantization")["OptimizationJobSummaries"]
    assert [j["OptimizationJobName"] for j in quant] == names[0::2]
    assert all(j["OptimizationTypes"] == ["Quantization"] for j in quant)

    assert [
        j["OptimizationJobName"] for j in sm.list_optimization_jobs(NameContains="JOB-1")["OptimizationJobSummaries"]
    ] == ["job-10", "job-11"]
    assert len(sm.list_optimization_jobs(StatusEquals="FAILED")["OptimizationJobSummaries"]) == 12
    assert sm.list_optimization_jobs(StatusEquals="COMPLETED")["OptimizationJobSummaries"] == []
    before = sm.list_optimization_jobs(CreationTimeBefore=middle)["OptimizationJobSummaries"]
    after = sm.list_optimization_jobs(CreationTimeAfter=middle)["OptimizationJobSummaries"]
    assert [j["OptimizationJobName"] for j in before] == names[:6]
    assert [j["OptimizationJobName"] for j in after] == names[6:]
    future = datetime.datetime.now(datetime.timezone.utc) + datetime.timedelta(hours=1)
    assert sm.list_optimization_jobs(LastModifiedTimeAfter=future)["OptimizationJobSummaries"] == []
    assert len(sm.list_optimization_jobs(LastModifiedTimeBefore=future)["OptimizationJobSummaries"]) == 12

    # boto3's paginator walks every page, each of MaxResults jobs.
    pages = list(
        sm.get_paginator("list_optimization_jobs").paginate(
            SortBy="Name", PaginationConfig={"PageSize": 5}
        )
    )
    assert [len(p["OptimizationJobSummaries"]) for p in pages] == [5, 5, 2]
    for p in pages:
        check_response("ListOptimizationJobs", p)
    assert [j["OptimizationJobName"] for p in pages for j in p["OptimizationJobSummaries"]] == names

    # Page by page, one job a page, in every order: the same jobs as one listing.
    for sort_by, order in (("CreationTime", "Descending"), ("Status", "Ascending"), ("Name", "Ascending")):
        whole = [
            j["OptimizationJobName"]
            for j in sm.list_optimization_jobs(SortBy=sort_by, SortOrder=order)["OptimizationJobSummaries"]
        ]
        paged = [
            j["OptimizationJobName"]
            for p in sm.get_paginator("list_optimization_jobs").paginate(
                SortBy=sort_by, SortOrder=order, PaginationConfig={"PageSize": 1}
            )
            for j in p["OptimizationJobSummaries"]
        ]
        assert paged == whole and len(whole) == 12, (sort_by, order, paged)
    assert [
        j["OptimizationJobName"]
        for j in sm.list_optimization_jobs(SortOrder="Descending")["OptimizationJobSummaries"]
    ] == names[::-1]

    # Jobs created and deleted between pages neither repeat nor hide a job of the
    # listing under way.
    first = sm.list_optimization_jobs(MaxResults=4)
    sm.create_optimization_job(**quick_request("aaa-new"))
    sm.create_optimization_job(**quick_request("zzz-new"))
    sm.delete_optimization_job(OptimizationJobName="job-01")
    seen = [j["OptimizationJobName"] for j in first["OptimizationJobSummaries"]]
    token = first["NextToken"]
    while token:
        page = sm.list_optimization_jobs(MaxResults=4, NextToken=token)
        seen += [j["OptimizationJobName"] for j in page["OptimizationJobSummaries"]]
        token = page.get("NextToken")
    assert seen == names, seen
    assert len(seen) == len(set(seen))

    # A token belongs to its filters.
    with pytest.raises(botocore.exceptions.ClientError) as e:
        sm.list_optimization_jobs(MaxResults=4, NextToken=first["NextToken"], NameContains="job")
    assert error_of(e)[0] == "ValidationException"


def test_describe_response_matches_shape(server):
    sm = server.client()
    req = quick_request(
        "shape-check",
        OptimizationEnvironment={"OPTION_MAX_MODEL_LEN": "512"},
        Tags=[{"Key": "team", "Value": "ml"}],
        MaxInstanceCount=2,
    )
    sm.create_optimization_job(**req)
    d = wait_for_status(sm, "shape-check", {"FAILED"})
    d.pop("_seen")
    check_response("DescribeOptimizationJob", d)
    assert d["RoleArn"] == ROLE
    assert d["OptimizationEnvironment"] == {"OPTION_MAX_MODEL_LEN": "512"}
    assert d["MaxInstanceCount"] == 2
    assert "nothing-here" in d["FailureReason"] and "S3Uri" in d["FailureReason"]
    assert d["OptimizationEndTime"] >= d["OptimizationStartTime"] >= d["CreationTime"]
    # A missing bucket is named as such, before any work.
    sm.create_optimization_job(
        **quick_request("no-bucket", OutputConfig={"S3OutputLocation": "s3://no-such-bucket/x/"})
    )
    reason = wait_for_status(sm, "no-bucket", {"FAILED"})["FailureReason"]
    assert "s3://no-such-bucket/x/" in reason and "bucket does not exist" in reason, reason
    assert len(reason) <= 1024
    for op in ("StopOptimizationJob", "DeleteOptimizationJob"):
        call = sm.stop_optimization_job if op.startswith("Stop") else sm.delete_optimization_job
        check_response(op, call(OptimizationJobName="shape-check"))
