"""What makes state survive: the checkpoint (outputs, changelogs and offsets committed
together), the restore from changelogs, and tables followed from their topics."""
