"""OpenAI's Files and Batch APIs: a SQLite store (:mod:`.store`), uploaded files (:mod:`.files`), batches checked
and created (:mod:`.batches`), and the runner that answers their lines through the engine (:mod:`.runner`)."""
