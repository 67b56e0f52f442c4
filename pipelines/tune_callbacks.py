"""The Tune callbacks of ``jingle tune``'s driver (``pipelines/tune.py``): every trial as an
MLflow child run of the search's run, and a multi-worker trial's placement group freed
when Tune ends the trial."""

from __future__ import annotations

import math


def tracking_callback(uri: str, experiment_id: str, parent_run_id: str):
    """The Tune callback that logs every trial as a child run of ``parent_run_id``."""
    from mlflow.entities import Metric, Param
    from mlflow.tracking import MlflowClient
    from ray.tune import Callback

    class TrialRuns(Callback):
        def __init__(self) -> None:
            self.client = MlflowClient(uri)
            self.runs: dict[str, str] = {}

        def _run(self, trial) -> str:
            if trial.trial_id in self.runs:
                return self.runs[trial.trial_id]
            found = self.client.search_runs(
                [experiment_id], filter_string=f"tags.`jingle.trial` = '{trial.trial_id}' and tags.`mlflow.parentRunId` = '{parent_run_id}'",
                max_results=1,
            )
            if found:  # a resumed search: the trial's run goes on
                run_id = found[0].info.run_id
            else:
                run = self.client.create_run(
                    experiment_id, run_name=f"trial-{trial.trial_id}",
                    tags={"mlflow.parentRunId": parent_run_id, "jingle.trial": trial.trial_id},
                )
                run_id = run.info.run_id
                params = [Param(key, str(value)[:6000]) for key, value in sorted(trial.config.items())]
                if params:
                    self.client.log_batch(run_id, params=params)
            self.runs[trial.trial_id] = run_id
            return run_id

        def on_trial_start(self, iteration, trials, trial, **info) -> None:
            self._run(trial)

        def on_trial_result(self, iteration, trials, trial, result, **info) -> None:
            step = int(result.get("step", result.get("training_iteration", 0)))
            timestamp = int(result.get("timestamp", 0) * 1000)
            metrics = [
                Metric(key, float(value), timestamp, step)
                for key, value in result.items()
                if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
                and key not in ("timestamp", "time_this_iter_s", "time_total_s", "pid", "training_iteration", "done")
            ]
            if metrics:
                self.client.log_batch(self._run(trial), metrics=metrics)

        def on_trial_complete(self, iteration, trials, trial, **info) -> None:
            self.client.set_terminated(self._run(trial), "FINISHED")

        def on_trial_error(self, iteration, trials, trial, **info) -> None:
            self.client.set_terminated(self._run(trial), "FAILED")

    return TrialRuns()


def trainer_cleanup():
    """The Tune callback that frees the workers of a multi-worker trial Tune has ended.

    When ASHA stops a trial, Tune ends the trial's process, and with it the trial's Train
    controller and workers, but not the workers' placement group: Ray Train's own cleaner
    needs the dashboard's State API and, without it, the group keeps its CPUs and the next
    trial's trainer waits for them forever. Each trainer reports its group's id with every
    result (``PLACEMENT_GROUP_KEY``); the driver removes it when the trial ends.
    """
    import ray
    from ray.tune import Callback
    from ray.util.placement_group import PlacementGroup, remove_placement_group

    from jingle.pipelines.ray_contexts import PLACEMENT_GROUP_KEY

    class TrainerCleanup(Callback):
        def __init__(self) -> None:
            self.groups: dict[str, str] = {}

        def on_trial_result(self, iteration, trials, trial, result, **info) -> None:
            if result.get(PLACEMENT_GROUP_KEY):
                self.groups[trial.trial_id] = result[PLACEMENT_GROUP_KEY]

        def _free(self, trial) -> None:
            group_id = self.groups.pop(trial.trial_id, None)
            if group_id is None:
                return
            group = PlacementGroup(ray.PlacementGroupID(bytes.fromhex(group_id)))
            if ray.util.placement_group_table(group).get("state", "REMOVED") != "REMOVED":
                remove_placement_group(group)

        def on_trial_complete(self, iteration, trials, trial, **info) -> None:
            self._free(trial)

        def on_trial_error(self, iteration, trials, trial, **info) -> None:
            self._free(trial)

    return TrainerCleanup()
