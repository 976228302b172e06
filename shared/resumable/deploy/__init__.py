"""Deploying pipelines to Google Cloud: Terraform variables, gcloud commands, the bundle.

Everything is rendered from one :class:`DeploymentPlan`, built by :func:`build_plan` from
the pipeline definitions through :func:`resumable.topology.build_topology` — the names
and settings the runtime and the local stack use — so infrastructure and code agree by
construction. ``resumable deploy`` (:mod:`resumable.deploy.cli`) is the command line.
"""

from .bundle import BundleError, build_bundle, check_bundle
from .commands import DeployError
from .plan import Binding, DeploymentPlan, build_plan
from .tfvars import tfvars, write_tfvars

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
