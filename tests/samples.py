"""Requests from examples/backlog.jsonl shared by the service tests."""

# Requests from examples/backlog.jsonl whose verdicts differ: the real model calls the first
# core and the second one-off; the hashing embedder calls the third generalizable.
BOOSTER = ("Booster recall based on the date the vaccine was actually given",
           "Our booster reminders are scheduled from the date of the original booking, but "
           "when an owner brings the pet in late the next booster is due a year from the day "
           "it was actually given. Recall reminders should follow the date the vaccine was "
           "given, so owners are not reminded weeks early.")
LAB = ("Integrate with our in-house lab system",
       "We run our own small lab with an in-house system our previous IT contractor built, "
       "HLLab. Pawtrack should read the HLLab results table (a SQL Server database on our "
       "server in the back office), book a results consult and text the owner the results. "
       "Happy to give you a VPN account.")
WHATSAPP = ("Send appointment reminders through WhatsApp as well as SMS",
            "Many owners in our area use WhatsApp rather than SMS. Let each owner choose "
            "WhatsApp for reminders and confirmations, with the same timing as SMS reminders.")
