"""Deploying pipelines to Google Cloud: Terraform variables, gcloud commands, the bundle.

Everything is rendered from one :class:`DeploymentPlan`, built by :func:`build_plan` from
the pipeline definitions through :func:`resumable.serverless._topology.build_topology` — the names
and settings the runtime and the local stack use — so infrastructure and code agree by
construction. ``resumable deploy`` (:mod:`resumable.cli._deploy`) is the command line.
"""

from resumable.deploy.bundle import build_bundle, check_bundle
from resumable.deploy.plan import Binding, DeploymentPlan, build_plan
from resumable.deploy.tfvars import tfvars, write_tfvars
from resumable.errors import BundleError, DeployError

__all__ = [
    "Binding",
    "BundleError",
    "DeployError",
    "DeploymentPlan",
    "build_bundle",
    "build_plan",
    "check_bundle",
    "tfvars",
    "write_tfvars",
]
