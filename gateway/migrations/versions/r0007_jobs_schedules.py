"""Jobs, monthly schedules (with the scheduler's job store) and the archive of scheduled results.

Revision ID: 0007
Revises: 0006

Written out rather than created from the live metadata, so a later change to `gateway.db.jobs`,
`schedules`, `scheduler_jobs` or `archived_results` needs a revision of its own. Constraint names follow
`gateway.db.NAMING_CONVENTION`. `scheduler_jobs` is APScheduler's SQLAlchemyJobStore table as that
library defines it; the scheduler finds it here and does not create it.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

# gateway.db.UtcDateTime stores through this type; the DDL is the same.
TIMESTAMP = sa.DateTime(timezone=True)

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None

JOB_KINDS = "kind IN ('query', 'indicator', 'pack')"
JOB_STATES = "state IN ('queued', 'running', 'succeeded', 'failed', 'cancelled', 'interrupted')"
SCHEDULE_STATES = "state IN ('active', 'paused', 'removed')"
PERIOD_RULES = "period_rule IN ('previous_month')"


def upgrade() -> None:
    op.create_table(
        "jobs",
        sa.Column("id", sa.String(32), nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("target", sa.String(64), nullable=False),
        sa.Column("params_json", sa.Text(), nullable=False),
        sa.Column("principal", sa.String(100), nullable=False),
        sa.Column("submitted_by", sa.String(100), nullable=False),
        sa.Column("schedule_id", sa.String(32), nullable=True),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("steps_done", sa.Integer(), nullable=False),
        sa.Column("steps_total", sa.Integer(), nullable=False),
        sa.Column("current_step", sa.String(200), nullable=True),
        sa.Column("cancel_requested", sa.Boolean(), nullable=False),
        sa.Column("error_json", sa.Text(), nullable=True),
        sa.Column("result_json", sa.Text(), nullable=True),
        sa.Column("created_at", TIMESTAMP, nullable=False),
        sa.Column("started_at", TIMESTAMP, nullable=True),
        sa.Column("finished_at", TIMESTAMP, nullable=True),
        sa.Column("updated_at", TIMESTAMP, nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_jobs"),
        sa.CheckConstraint(JOB_KINDS, name="ck_jobs_kind"),
        sa.CheckConstraint(JOB_STATES, name="ck_jobs_state"),
    )
    op.create_index("ix_jobs_principal", "jobs", ["principal"])
    op.create_index("ix_jobs_state", "jobs", ["state"])
    op.create_table(
        "schedules",
        sa.Column("id", sa.String(32), nullable=False),
        sa.Column("name", sa.String(100), nullable=False),
        sa.Column("pack", sa.String(32), nullable=False),
        sa.Column("period_rule", sa.String(32), nullable=False),
        sa.Column("cron_json", sa.Text(), nullable=False),
        sa.Column("run_as", sa.String(100), nullable=False),
        sa.Column("epsilon", sa.String(32), nullable=True),
        sa.Column("groups_json", sa.Text(), nullable=True),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("created_by", sa.String(100), nullable=False),
        sa.Column("created_at", TIMESTAMP, nullable=False),
        sa.Column("updated_at", TIMESTAMP, nullable=False),
        sa.Column("last_run_at", TIMESTAMP, nullable=True),
        sa.Column("last_job_id", sa.String(32), nullable=True),
        sa.Column("last_missed_at", TIMESTAMP, nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_schedules"),
        sa.CheckConstraint(SCHEDULE_STATES, name="ck_schedules_state"),
        sa.CheckConstraint(PERIOD_RULES, name="ck_schedules_period_rule"),
    )
    op.create_table(
        "scheduler_jobs",
        sa.Column("id", sa.Unicode(191), nullable=False),
        sa.Column("next_run_time", sa.Float(25), nullable=True),
        sa.Column("job_state", sa.LargeBinary(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_scheduler_jobs"),
    )
    op.create_index("ix_scheduler_jobs_next_run_time", "scheduler_jobs", ["next_run_time"])
    op.create_table(
        "archived_results",
        sa.Column("id", sa.String(32), nullable=False),
        sa.Column("pack", sa.String(32), nullable=False),
        sa.Column("period", sa.String(7), nullable=False),
        sa.Column("job_id", sa.String(32), nullable=False),
        sa.Column("schedule_id", sa.String(32), nullable=True),
        sa.Column("figures_json", sa.Text(), nullable=False),
        sa.Column("created_at", TIMESTAMP, nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_archived_results"),
        sa.UniqueConstraint("job_id", name="uq_archived_results_job_id"),
    )
    op.create_index("ix_archived_results_pack_period", "archived_results", ["pack", "period"])


def downgrade() -> None:
    op.drop_table("archived_results")
    op.drop_table("scheduler_jobs")
    op.drop_table("schedules")
    op.drop_table("jobs")
