"""Prints the SAM template translated to plain CloudFormation, as JSON.

Used by tests/template.rs (with `--raw`, the template untranslated): moto's CloudFormation ignores the SAM transform, so
we run the SAM translator (the same one `sam deploy` uses) offline. No AWS
call: the region is fixed and no managed policy is looked up.
"""
import json
import os
import sys

os.environ.setdefault("AWS_DEFAULT_REGION", "us-east-1")

from samtranslator.translator.transform import transform  # noqa: E402
from samtranslator.yaml_helper import yaml_parse  # noqa: E402


class NoManagedPolicies:
    """The template names no managed policies; looking one up would be a bug."""

    def load(self):
        return {}


with open(sys.argv[1], encoding="utf-8") as f:
    template = yaml_parse(f.read())
# `--raw`: the template as written (the build Metadata and CodeUri the
# transform drops or replaces), for the tests that check how it is built.
if sys.argv[2:] == ["--raw"]:
    print(json.dumps(template, default=str, indent=1))
    sys.exit(0)
# `sam package` replaces local CodeUri paths with S3 locations before the
# transform runs; do the same with a placeholder.
for resource in template.get("Resources", {}).values():
    if resource.get("Type") == "AWS::Serverless::Function":
        resource["Properties"]["CodeUri"] = "s3://packaged/bootstrap.zip"
print(json.dumps(transform(template, {}, NoManagedPolicies()), default=str, indent=1))
