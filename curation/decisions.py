"""What a stage says about each row: the `decision` column every stage adds.

A stage never filters its input. It returns every row it was given with a `decision` struct
(action, reason, score, cluster_id, duplicate_of); the pipeline logs those decisions to
`silver.decisions` and passes only the rows not dropped to the next stage. So nothing leaves
without a reason, and each stage is testable on its own.
"""

from __future__ import annotations

from pyspark.sql import Column
from pyspark.sql import functions as F
from pyspark.sql import types as T

KEPT = "kept"
DROPPED = "dropped"
MODIFIED = "modified"
ACTIONS = (KEPT, MODIFIED, DROPPED)

DECISION = "decision"
DECISION_TYPE = T.StructType(
    [
        T.StructField("action", T.StringType(), False),
        T.StructField("reason", T.StringType(), True),
        T.StructField("score", T.DoubleType(), True),
        T.StructField("cluster_id", T.StringType(), True),
        T.StructField("duplicate_of", T.StringType(), True),
    ]
)


def decision(
    action: str | Column,
    reason: str | Column | None = None,
    score: float | Column | None = None,
    cluster_id: str | Column | None = None,
    duplicate_of: str | Column | None = None,
) -> Column:
    """A `decision` struct column of `DECISION_TYPE`; plain values become literals of its field types."""
    values = {
        "action": action,
        "reason": reason,
        "score": score,
        "cluster_id": cluster_id,
        "duplicate_of": duplicate_of,
    }
    return F.struct(
        *[
            (value if isinstance(value, Column) else F.lit(value).cast(field.dataType)).alias(field.name)
            for field in DECISION_TYPE.fields
            for value in (values[field.name],)
        ]
    )


def kept(score: float | Column | None = None) -> Column:
    return decision(KEPT, score=score)
