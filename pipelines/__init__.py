"""Ray jobs that build the project's datasets. Nothing else imports this package."""
