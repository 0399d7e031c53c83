"""The order executor's parts (``order_executor.OrderExecutor`` is the face): order types and
price rules, bracket submission, tracking, leg journaling, cancels, protection of positions
and the emergency stop, each a class the executor inherits."""
