"""millpond's public Python API: read the lakehouse from a notebook or a script, without a JVM.

    import millpond
    lake = millpond.open_lakehouse("lakehouse")
    docs = lake.table("silver.documents")           # pyarrow.Table
    frame = lake.polars("silver.documents")         # polars.DataFrame, where Polars is installed

See `lineage.reader` for what each method does.
"""

from lineage.errors import MillpondError
from lineage.reader import Lakehouse, LakehouseReadError, TableInfo, open_lakehouse

__all__ = ["Lakehouse", "LakehouseReadError", "MillpondError", "TableInfo", "open_lakehouse"]
