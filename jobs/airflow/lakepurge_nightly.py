"""lakepurge nightly: validate -> plan -> purge shards (dynamic task mapping) -> final purge -> verify
-> status (fails when an erasure request is older than the SLA).

Configured by environment (of the Airflow worker):
  LAKEPURGE_BIN     the lakepurge binary (default: lakepurge on PATH)
  LAKEPURGE_JOB     the job spec file
  LAKEPURGE_SHARDS  how many purge shards run in parallel (default 1)
  LAKEPURGE_MEMORY_LIMIT  the memory each purge task may hold, e.g. 1GiB (default:
                    lakepurge's own, 2GiB); size it to the worker
  LAKEPURGE_SLA     how old a pending erasure request may get before the status task fails
                    (default 25d, inside GDPR's one month); a failed task pages whoever the
                    DAG's alerting pages

The run id is the logical date ({{ ds }}), so a retried or re-triggered task of the same day
resumes the same run: purge is idempotent per run id. Every shard shares the event snapshot the
first one pinned; the final purge plans any file no shard listed (new, or moved by a
compaction), finishes whatever is left and writes the run manifest. One run of a job works at
a time (a lease beside its manifests): a purge started while another run of the job holds it
(a manual rerun during the nightly) exits 1 at once, and the task's retry runs it later.

The run's confirmations (one Parquet file per job and run, read by the erasure pipeline to
close its requests) say, per event: erased (rows removed or redacted), no_data (every table
with a rule for its subject type was searched and none held a row) or no_rule (no table has a
rule for its subject type: validate lists those types). An event a run could not settle is not
confirmed: it stays pending, and the status task fails once one is older than the SLA (an
event whose requested_at cannot be parsed counts as late).
"""

import os
import shlex
from datetime import timedelta

import pendulum
from airflow.providers.standard.operators.bash import BashOperator
from airflow.sdk import DAG

LAKEPURGE_BIN = os.environ.get("LAKEPURGE_BIN", "lakepurge")
LAKEPURGE_JOB = os.environ.get("LAKEPURGE_JOB", "/opt/lakepurge/jobs/nightly.toml")
LAKEPURGE_SHARDS = int(os.environ.get("LAKEPURGE_SHARDS", "1"))
LAKEPURGE_MEMORY_LIMIT = os.environ.get("LAKEPURGE_MEMORY_LIMIT", "")
LAKEPURGE_SLA = os.environ.get("LAKEPURGE_SLA", "25d")

BIN = shlex.quote(LAKEPURGE_BIN)
JOB = shlex.quote(LAKEPURGE_JOB)
RUN_ID = "{{ ds }}"
LOGS = "--log-format json"
MEMORY = f" --memory-limit {shlex.quote(LAKEPURGE_MEMORY_LIMIT)}" if LAKEPURGE_MEMORY_LIMIT else ""

with DAG(
    dag_id="lakepurge_nightly",
    description="Erase the subjects of the erasure-event dataset from every registered table",
    schedule="@daily",
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
    max_active_runs=1,
    default_args={"retries": 2, "retry_delay": timedelta(minutes=5)},
    tags=["privacy", "lakepurge"],
) as dag:
    validate = BashOperator(
        task_id="validate",
        bash_command=f"{BIN} {LOGS} validate --job {JOB}",
    )
    plan = BashOperator(
        task_id="plan",
        bash_command=f"{BIN} {LOGS} plan --job {JOB} --json",
    )
    purge_shards = BashOperator.partial(task_id="purge_shard").expand(
        bash_command=[
            f"{BIN} {LOGS} purge --job {JOB} --run-id {RUN_ID}{MEMORY} --shard {i}/{LAKEPURGE_SHARDS}"
            for i in range(LAKEPURGE_SHARDS)
        ]
    )
    purge_final = BashOperator(
        task_id="purge_final",
        bash_command=f"{BIN} {LOGS} purge --job {JOB} --run-id {RUN_ID}{MEMORY}",
    )
    verify = BashOperator(
        task_id="verify",
        bash_command=f"{BIN} {LOGS} verify --job {JOB} --run-id {RUN_ID}",
    )

    # Exit 3 (a pending request older than the SLA) fails the task: no retry makes it younger.
    status = BashOperator(
        task_id="status",
        bash_command=f"{BIN} {LOGS} status --job {JOB} --sla {shlex.quote(LAKEPURGE_SLA)}",
        retries=0,
    )

    validate >> plan >> purge_shards >> purge_final >> verify >> status
