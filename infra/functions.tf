# start_run, dead_letter and watchdog: one function each, on their control topic.
module "control_function" {
  source   = "./modules/function"
  for_each = var.control_functions

  function   = each.value
  topic_id   = local.control_topic_ids[each.value.topic]
  deployment = local.deployment
}

# One topic and one run_step function per step of each pipeline.
module "pipeline" {
  source   = "./modules/pipeline"
  for_each = var.pipelines

  steps      = each.value.steps
  deployment = local.deployment
}
